import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { perIp } from '../../../plugins/infra/rate-limit.js'
import { clientOf } from '../../../plugins/app/sessions/binding.js'
import { ResendBody, VerifyEmailBody, resendResponses, verifyResponses } from './schemas.js'

const resent = 'If the account exists and its email is not yet verified, a new code is on its way.'

const route: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app

  app.post('/verify', {
    config: perIp(config.RATE_LIMIT_VERIFY_IP_MAX, config.RATE_LIMIT_VERIFY_IP_WINDOW),
    schema: {
      tags: ['auth'],
      summary: 'Confirm the email address with the code mailed to it',
      description: 'Takes effect at once, on access tokens already issued too. A wrong, expired, used or replaced code, ' +
        'or an unknown email, all answer 400 `otp_invalid`.',
      operationId: 'verifyEmail',
      body: VerifyEmailBody,
      response: verifyResponses
    }
  }, async (request) => {
    const { email, code } = request.body
    await app.accounts.verifyEmail(email, code, clientOf(request))
    return { emailVerified: true as const }
  })

  app.post('/resend', {
    preHandler: app.emailRateLimit({ name: 'resend', max: config.RATE_LIMIT_MAIL_EMAIL_MAX, windowSeconds: config.RATE_LIMIT_MAIL_EMAIL_WINDOW }),
    schema: {
      tags: ['auth'],
      summary: 'Mail a new email-verification code',
      description: 'Always 202 with the same body, so it does not reveal whether an account exists. ' +
        'Nothing is sent for verified accounts, or within OTP_RESEND_COOLDOWN of the previous code.',
      operationId: 'resendEmailCode',
      body: ResendBody,
      response: resendResponses
    }
  }, async (request, reply) => {
    app.emailCodes.request(request.body.email, 'verify_email')
    reply.code(202)
    return { message: resent }
  })
}

export default route
