import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { SMTPServer } from 'smtp-server'
import { simpleParser, type ParsedMail } from 'mailparser'
import type { Mail } from '../../../plugins/infra/mailer.js'
import { build } from '../../helper.js'

/** A real SMTP server on an ephemeral port; `refuseRecipient` makes it answer 550 to that address. */
async function smtpServer (t: Test, refuseRecipient?: string) {
  const received: Array<{ envelope: { from: string, to: string[] }, mail: ParsedMail }> = []
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo (address, _session, callback) {
      if (address.address === refuseRecipient) return callback(Object.assign(new Error('No such mailbox'), { responseCode: 550 }))
      callback()
    },
    onData (stream, session, callback) {
      simpleParser(stream).then(mail => {
        const from = session.envelope.mailFrom
        received.push({ envelope: { from: from ? from.address : '', to: session.envelope.rcptTo.map(r => r.address) }, mail })
        callback()
      }, callback)
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.server.address() as AddressInfo
  const close = () => new Promise<void>(resolve => server.close(() => resolve()))
  t.teardown(close)
  return { url: `smtp://127.0.0.1:${port}`, received, close }
}

const mail: Mail = {
  to: 'reader@example.com',
  subject: 'Your latchkey code',
  text: 'Your code is 123456. It expires in 10 minutes.',
  html: '<p>Your code is <b>123456</b>. It expires in 10 minutes.</p>'
}

t.test('with SMTP_URL, a mail is delivered to the SMTP server as sent', async t => {
  const smtp = await smtpServer(t)
  const app = await build(t, { SMTP_URL: smtp.url, MAIL_FROM: 'latchkey test <sender@example.com>' })
  await app.mailer.send(mail)

  t.equal(smtp.received.length, 1, 'one message arrived')
  const [{ envelope, mail: got }] = smtp.received
  t.same(envelope, { from: 'sender@example.com', to: ['reader@example.com'] })
  t.equal(got.from?.text, '"latchkey test" <sender@example.com>', 'From is MAIL_FROM')
  t.equal(got.to && !Array.isArray(got.to) ? got.to.text : undefined, 'reader@example.com')
  t.equal(got.subject, mail.subject)
  t.equal(got.text?.trim(), mail.text)
  t.equal(typeof got.html === 'string' ? got.html.trim() : undefined, mail.html)
})

t.test('several mails in a row all arrive', async t => {
  const smtp = await smtpServer(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  await Promise.all([1, 2, 3].map(n => app.mailer.send({ ...mail, to: `reader-${n}@example.com` })))
  t.same(smtp.received.flatMap(r => r.envelope.to).sort(), ['reader-1@example.com', 'reader-2@example.com', 'reader-3@example.com'])
})

t.test('a send rejects when the server refuses the recipient', async t => {
  const smtp = await smtpServer(t, 'nobody@example.com')
  const app = await build(t, { SMTP_URL: smtp.url })
  await t.rejects(app.mailer.send({ ...mail, to: 'nobody@example.com' }), /550|No such mailbox/)
  t.equal(smtp.received.length, 0)
})

t.test('a send rejects promptly when the SMTP server is gone', async t => {
  const smtp = await smtpServer(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  await smtp.close()
  const started = Date.now()
  await t.rejects(app.mailer.send(mail), { code: 'ESOCKET' })
  t.ok(Date.now() - started < 5000, 'it does not hang')
})

t.test('without SMTP_URL, the mail is written to the log instead of being sent', async t => {
  const app = await build(t, { SMTP_URL: undefined })
  const logged = t.capture(app.log, 'info')
  await app.mailer.send(mail)
  const lines = logged().map(call => call.args.map(a => typeof a === 'string' ? a : JSON.stringify(a)).join(' '))
  t.equal(lines.length, 1, 'one log line')
  t.match(lines[0], mail.to)
  t.match(lines[0], mail.subject)
  t.match(lines[0], '123456', 'the code can be read in the log')
})
