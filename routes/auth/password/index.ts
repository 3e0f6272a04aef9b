import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { perIp } from '../../../plugins/infra/rate-limit.js'
import { TransportHeaders } from '../schemas.js'
import { accessTokenSecurity } from '../../../openapi/components.js'
import { clientOf } from '../../../plugins/app/sessions/binding.js'
import { ChangeBody, ForgotBody, ResetBody, changeResponses, forgotResponses, resetResponses } from './schemas.js'

const mailed = 'If an account exists for this email, a reset code is on its way.'

const route: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app

  app.post('/forgot', {
    preHandler: app.emailRateLimit({ name: 'forgot', max: config.RATE_LIMIT_MAIL_EMAIL_MAX, windowSeconds: config.RATE_LIMIT_MAIL_EMAIL_WINDOW }),
    schema: {
      tags: ['auth'],
      summary: 'Mail a password reset code',
      description: 'Always 202 with the same body, so it does not reveal whether an account exists.',
      operationId: 'forgotPassword',
      body: ForgotBody,
      response: forgotResponses
    }
  }, async (request, reply) => {
    app.emailCodes.request(request.body.email, 'reset_password')
    reply.code(202)
    return { message: mailed }
  })

  app.post('/reset', {
    // A code is guessed here as on /auth/email/verify: the same per-IP limit.
    config: perIp(config.RATE_LIMIT_VERIFY_IP_MAX, config.RATE_LIMIT_VERIFY_IP_WINDOW),
    schema: {
      tags: ['auth'],
      summary: 'Set a new password with a mailed reset code; every session ends',
      description: 'Every access and refresh token of the account dies at once. The code proves the mailbox, ' +
        'so the email counts as verified afterwards. Any problem with the code answers 400 `otp_invalid`.',
      operationId: 'resetPassword',
      body: ResetBody,
      response: resetResponses
    }
  }, async (request, reply) => {
    const { email, code, newPassword } = request.body
    await app.accounts.resetPassword(email, code, newPassword, clientOf(request))
    reply.code(204)
  })

  app.post('/change', {
    onRequest: [app.authenticate, app.requireVerified],
    schema: {
      tags: ['auth'],
      summary: 'Change the password; every other session ends and this one gets a fresh token pair',
      description: 'A wrong current password answers 400 `invalid_credentials` (not 401: the token is fine). ' +
        "Every earlier token of the account dies, the caller's too: use the pair in the reply.",
      operationId: 'changePassword',
      headers: TransportHeaders,
      security: accessTokenSecurity,
      body: ChangeBody,
      response: changeResponses
    }
  }, async (request) => {
    const { currentPassword, newPassword } = request.body
    return { tokens: await app.accounts.changePassword(request.user, currentPassword, newPassword, clientOf(request)) }
  })
}

export default route
