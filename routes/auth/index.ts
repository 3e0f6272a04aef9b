import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { AppError } from '../../plugins/infra/errors.js'
import { clientOf } from '../../plugins/app/sessions/binding.js'
import { perIp } from '../../plugins/infra/rate-limit.js'
import { accessTokenSecurity } from '../../openapi/components.js'
import {
  LoginBody, LogoutBody, RefreshBody, RegisterBody, TransportHeaders,
  loginResponses, logoutResponses, refreshResponses, registerResponses
} from './schemas.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app

  // Where a session is opened from, and the DPoP key it binds to (SPEC §8.1): 400 `dpop_proof_invalid` for a bad proof.
  const device = async (request: FastifyRequest, deviceName?: string) => {
    const dpopJkt = await app.dpop.issuing(request)
    return { deviceName, ...clientOf(request), ...(dpopJkt !== undefined && { dpopJkt }) }
  }

  async function loggedIn (request: FastifyRequest, refreshToken: string | undefined): Promise<{ userId: string, sessionId: string }> {
    try {
      const user = await app.identify(request)
      if (user !== undefined) return { userId: user.id, sessionId: user.sessionId }
    } catch (err) {
      if (refreshToken === undefined) throw err
    }
    if (refreshToken === undefined) throw new AppError('token_missing')
    const claims = await app.sessions.check(refreshToken)
    await app.binding.enforce('refresh', claims, clientOf(request))
    return { userId: claims.sub, sessionId: claims.sid }
  }

  app.post('/register', {
    config: perIp(config.RATE_LIMIT_REGISTER_IP_MAX, config.RATE_LIMIT_REGISTER_IP_WINDOW),
    schema: {
      tags: ['auth'],
      summary: 'Create an account; opens a session and mails an email-verification code',
      operationId: 'register',
      headers: TransportHeaders,
      body: RegisterBody,
      response: registerResponses
    }
  }, async (request, reply) => {
    const { email, password, name } = request.body
    const result = await app.accounts.register({ email, password, name }, await device(request))
    reply.code(201)
    return result
  })

  app.post('/login', {
    config: perIp(config.RATE_LIMIT_LOGIN_IP_MAX, config.RATE_LIMIT_LOGIN_IP_WINDOW),
    preHandler: app.emailRateLimit({ name: 'login', max: config.RATE_LIMIT_LOGIN_EMAIL_MAX, windowSeconds: config.RATE_LIMIT_LOGIN_EMAIL_WINDOW }),
    schema: {
      tags: ['auth'],
      summary: 'Log in with email and password; opens a session',
      operationId: 'login',
      headers: TransportHeaders,
      body: LoginBody,
      response: loginResponses
    }
  }, async (request) => {
    const { email, password, deviceName } = request.body
    return await app.accounts.signIn({ email, password }, await device(request, deviceName))
  })

  app.post('/refresh', {
    config: perIp(config.RATE_LIMIT_REFRESH_IP_MAX, config.RATE_LIMIT_REFRESH_IP_WINDOW),
    schema: {
      tags: ['auth'],
      summary: 'Exchange a refresh token for a new access token (and, with rotation, a new refresh token)',
      description: 'Failures answer 400 (RFC 6749 invalid_grant): the client sends the user to log in. ' +
        'In cookie transport a refused refresh cookie is cleared.',
      operationId: 'refresh',
      headers: TransportHeaders,
      body: RefreshBody,
      response: refreshResponses
    }
  }, async (request) => {
    const token = app.refreshCookie.required(request, request.body.refreshToken)
    return { tokens: await app.sessions.rotate(token, clientOf(request), await app.dpop.issuing(request)) }
  })

  app.post('/logout', {
    // A logout by access token may come with no body at all.
    config: { optionalBody: true },
    schema: {
      tags: ['auth'],
      summary: 'End this session, every other session, or every session of the user',
      description: 'Authenticated by the Bearer access token, or by `refreshToken` in the body when the access token is gone ' +
        '(in cookie transport, by the refresh cookie, which a logout of this session clears).',
      operationId: 'logout',
      headers: TransportHeaders,
      security: [...accessTokenSecurity, {}],
      body: LogoutBody,
      response: logoutResponses
    }
  }, async (request, reply) => {
    const { refreshToken, scope = 'global' } = request.body
    // The access token when it still works; else the refresh token, so a
    // client whose access token expired while idle can still log out.
    const who = await loggedIn(request, app.refreshCookie.token(request, refreshToken))
    await app.sessions.end(who.userId, who.sessionId, scope, clientOf(request))
    if (scope !== 'others') app.refreshCookie.clear(request, reply)
    reply.code(204)
  })
}

export default route
