import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { AppError } from '../../infra/errors.js'
import type { AccessClaims } from '../tokens/tokens.js'
import type { User } from '../../../db/schema.js'
import { clientOf } from './binding.js'

export interface RequestUser {
  id: string
  sessionId: string
  role: User['role']
  emailVerified: boolean
  tokenVersion: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook: a valid, unrevoked access token, or 401. */
    authenticate (request: FastifyRequest): Promise<void>
    /** The caller by the access token in `Authorization` (Bearer, or DPoP with its proof), undefined when none was sent, or a 401 AppError. */
    identify (request: FastifyRequest): Promise<RequestUser | undefined>
    /** Checks an access token and the current state behind it; the hook and logout share it. */
    principalOf (claims: AccessClaims): Promise<RequestUser>
    /** After authenticate: 403 `email_not_verified` until the email is confirmed. */
    requireVerified (request: FastifyRequest): Promise<void>
    /** After authenticate: 403 `forbidden` unless the caller has the role. */
    requireRole (role: User['role']): (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    /** Set by `authenticate`, from the fresh state. */
    user: RequestUser
  }
}

/** The access token in `Authorization` and the scheme it came with (case-insensitive), or undefined when none was sent. */
export function accessToken (request: FastifyRequest): { scheme: 'bearer' | 'dpop', token: string } | undefined {
  const header = request.headers.authorization
  if (header === undefined) return undefined
  const match = /^(bearer|dpop) +([^ ]+) *$/i.exec(header)
  if (!match) throw new AppError('token_invalid', { message: 'The Authorization header must be "Bearer <token>" or "DPoP <token>".' })
  return { scheme: match[1].toLowerCase() as 'bearer' | 'dpop', token: match[2] }
}

export default fp(async (app) => {
  app.decorateRequest('user', null as unknown as RequestUser)

  app.decorate('principalOf', async (claims: AccessClaims) => {
    const [user, session] = await Promise.all([app.authState.user(claims.sub), app.authState.session(claims.sid)])
    // Checked first: disabling also ends the sessions and bumps the version, and the old tokens say why they died.
    if (user?.disabled) throw new AppError('account_disabled')
    // A session past its maximum lifetime is over, whatever a token (or JWT_LEEWAY) says.
    const over = session !== null && session.createdAt + app.config.SESSION_MAX_LIFETIME * 1000 <= Date.now()
    if (!user || !session || session.revoked || over || session.userId !== claims.sub || user.tokenVersion !== claims.ver) {
      throw new AppError('token_revoked')
    }
    // Role and verification come from the fresh state, not from the token.
    const { role, emailVerified } = user.profile
    return { id: claims.sub, sessionId: claims.sid, role, emailVerified, tokenVersion: user.tokenVersion }
  })

  /**
   * SPEC §8.1: a DPoP-bound token only as `DPoP <token>` with a proof of this
   * request by its key; as Bearer it is a stolen token's use (401
   * `token_binding_mismatch`), whatever DPOP says now.
   */
  async function confirm (request: FastifyRequest, sent: { scheme: 'bearer' | 'dpop', token: string }, claims: AccessClaims): Promise<void> {
    const jkt = claims.cnf?.jkt
    if (sent.scheme === 'bearer') {
      if (jkt === undefined) return
      app.log.warn({ userId: claims.sub, sessionId: claims.sid }, 'DPoP-bound token presented as a Bearer token')
      throw new AppError('token_binding_mismatch', { message: 'This token is bound to a DPoP key: send it as "DPoP <token>" with a proof.' })
    }
    if (app.dpop.mode === 'off') throw new AppError('token_invalid', { message: 'DPoP is not accepted here; send the token as "Bearer <token>".' })
    if (jkt === undefined) throw new AppError('token_invalid', { message: 'This token is not bound to a DPoP key; send it as "Bearer <token>".' })
    await app.dpop.enforce(request, sent.token, jkt)
  }

  app.decorate('identify', async (request: FastifyRequest) => {
    const sent = accessToken(request)
    if (sent === undefined) return undefined
    const claims = app.tokens.verify(sent.token, 'access')
    await confirm(request, sent, claims)
    const user = await app.principalOf(claims)
    await app.binding.enforce('access', claims, clientOf(request))
    return user
  })

  app.decorate('authenticate', async (request: FastifyRequest) => {
    const user = await app.identify(request)
    if (user === undefined) throw new AppError('token_missing')
    request.user = user
  })

  app.decorate('requireVerified', async (request: FastifyRequest) => {
    if (!request.user?.emailVerified) throw new AppError('email_not_verified')
  })

  app.decorate('requireRole', (role: User['role']) => async (request: FastifyRequest) => {
    if (request.user?.role !== role) throw new AppError('forbidden')
  })
}, { name: 'authenticate', dependencies: ['config', 'tokens', 'auth-state', 'binding', 'dpop'] })
