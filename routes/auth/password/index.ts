import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { perIp } from '../../../plugins/infra/rate-limit.js'
import { bumpTokenVersion, findUserByEmail, findUserById, markEmailVerified, setPasswordHash } from '../../../db/queries/users.js'
import { findSession, revokeSessions } from '../../../db/queries/sessions.js'
import { revokeSessionRefreshTokens } from '../../../db/queries/refresh-tokens.js'
import { AppError } from '../../../plugins/infra/errors.js'
import { TransportHeaders } from '../schemas.js'
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
    const user = await findUserByEmail(app.db, request.body.email)
    if (user && user.disabled_at === null) await app.emailCodes.send(user, 'reset_password')
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
    // Hashed first: a weak password is refused without spending the code, and no lock is held while argon2 runs.
    const passwordHash = await app.passwords.hash(newPassword)
    const { user, result: ended } = await app.emailCodes.consume(email, 'reset_password', code, async (trx, user) => {
      await setPasswordHash(trx, user.id, passwordHash)
      await markEmailVerified(trx, user.id)
      await bumpTokenVersion(trx, user.id)
      return await revokeSessions(trx, user.id)
    })
    await app.authState.invalidate({ users: [user.id], sessions: ended })
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
      security: [{ bearerAuth: [] }],
      body: ChangeBody,
      response: changeResponses
    }
  }, async (request) => {
    const { currentPassword, newPassword } = request.body
    const caller = request.user
    const user = await findUserById(app.db, caller.id)
    if (!user) throw new AppError('token_revoked')
    if (!await app.passwords.verify(user.password_hash, currentPassword)) {
      throw new AppError('invalid_credentials', { statusCode: 400, message: 'The current password is incorrect.' })
    }
    const passwordHash = await app.passwords.hash(newPassword)
    const { tokens, ended } = await app.db.transaction().execute(async trx => {
      await setPasswordHash(trx, caller.id, passwordHash)
      const version = await bumpTokenVersion(trx, caller.id)
      const session = await findSession(trx, caller.sessionId)
      // A logout or another change got here first: this token is no longer good for anything.
      if (version !== caller.tokenVersion + 1 || !session || session.revoked_at !== null) throw new AppError('token_revoked')
      const ended = await revokeSessions(trx, caller.id, { except: caller.sessionId })
      await revokeSessionRefreshTokens(trx, caller.sessionId)
      const issued = await app.tokens.issue(trx, { ...caller, tokenVersion: version }, caller.sessionId)
      return { tokens: issued.tokens, ended }
    })
    await app.authState.invalidate({ users: [caller.id], sessions: ended })
    return { tokens }
  })
}

export default route
