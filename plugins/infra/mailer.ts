import fp from 'fastify-plugin'
import nodemailer from 'nodemailer'

export interface Mail {
  to: string
  subject: string
  text: string
  html: string
}

export interface Mailer {
  /** Delivers one message; rejects when the SMTP server refuses it or cannot be reached. */
  send (mail: Mail): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    mailer: Mailer
  }
}

export default fp(async (app) => {
  const { SMTP_URL, MAIL_FROM } = app.config
  if (!SMTP_URL) {
    // No SMTP server: the message goes to the log, so a person running
    // `npm start` can read the code it carries.
    app.decorate('mailer', {
      async send (mail: Mail) {
        app.log.info({ mail: { to: mail.to, subject: mail.subject } }, `mail (not sent, no SMTP_URL):\n${mail.text}`)
      }
    })
    return
  }
  // Bounded, so a dead SMTP server fails a send instead of holding it open.
  const transport = nodemailer.createTransport({
    url: SMTP_URL,
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 10000
  }, { from: MAIL_FROM })
  app.decorate('mailer', {
    async send (mail: Mail) {
      await transport.sendMail(mail)
    }
  })
  app.addHook('onClose', async () => transport.close())
}, { name: 'mailer', dependencies: ['config'] })
