import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CookieSerializeOptions } from '@fastify/cookie'
import { AppError } from '../../infra/errors.js'
import type { Tokens } from '../../../openapi/components.js'

/** SPEC §6.1: the cookie a browser app's refresh token travels in, and the header that asks for it. */
export const refreshCookieName = '__Host-latchkey-refresh'
export const transportHeader = 'x-token-transport'

// `__Host-` requires Secure, Path=/ and no Domain; a browser ignores a
// Set-Cookie that breaks the rule, the clearing one included.
const attributes: CookieSerializeOptions = { httpOnly: true, secure: true, sameSite: 'strict', path: '/' }

declare module 'fastify' {
  interface FastifyInstance {
    refreshCookie: {
      /** The refresh token a refresh or logout request presents: its body's, else the cookie's in cookie transport. */
      token (request: FastifyRequest, bodyToken: string | undefined): string | undefined
      /** The same for refresh, where a token is required: 400 `validation_failed` without one. */
      required (request: FastifyRequest, bodyToken: string | undefined): string
      /** Expires the cookie (logout of this session). */
      clear (request: FastifyRequest, reply: FastifyReply): void
    }
  }
}

export default fp(async (app) => {
  const on = app.config.REFRESH_COOKIE === 'on'
  // Requests whose token came from the cookie: when it is refused, the cookie goes too.
  const readFromCookie = new WeakSet<FastifyRequest>()

  // The custom header is the CSRF defence: a cross-site form cannot send it.
  const cookieTransport = (request: FastifyRequest) => on && request.headers[transportHeader] === 'cookie'

  function token (request: FastifyRequest, bodyToken: string | undefined): string | undefined {
    if (bodyToken !== undefined || !cookieTransport(request)) return bodyToken
    const cookie = request.cookies[refreshCookieName]
    if (cookie === undefined || cookie === '') return undefined
    readFromCookie.add(request)
    return cookie
  }

  function required (request: FastifyRequest, bodyToken: string | undefined): string {
    const found = token(request, bodyToken)
    if (found !== undefined) return found
    const cookieOnly = on && request.cookies[refreshCookieName] !== undefined
    throw new AppError('validation_failed', {
      message: cookieOnly
        ? 'The refresh cookie is read only with the header X-Token-Transport: cookie.'
        : 'The request is not valid: refreshToken is required.'
    })
  }

  function clear (request: FastifyRequest, reply: FastifyReply): void {
    if (cookieTransport(request) || (on && request.cookies[refreshCookieName] !== undefined)) {
      reply.clearCookie(refreshCookieName, attributes)
    }
  }

  app.decorate('refreshCookie', { token, required, clear })
  if (!on) return

  // Every reply carrying a refresh token (register, login, refresh, password
  // change) hands it over as the cookie instead, in cookie transport.
  app.addHook('preSerialization', async (request, reply, payload: { tokens?: Tokens }) => {
    const tokens = payload?.tokens
    if (!cookieTransport(request) || typeof tokens?.refreshToken !== 'string') return payload
    const { refreshToken, ...rest } = tokens
    reply.setCookie(refreshCookieName, refreshToken, { ...attributes, maxAge: tokens.refreshExpiresIn })
    return { ...payload, tokens: rest }
  })

  // A refused cookie (400 on refresh, 401 on logout) is dead: the browser drops it.
  app.addHook('onSend', async (request, reply) => {
    if (readFromCookie.has(request) && (reply.statusCode === 400 || reply.statusCode === 401)) {
      reply.clearCookie(refreshCookieName, attributes)
    }
  })
}, { name: 'refresh-cookie', dependencies: ['config', '@fastify/cookie'] })
