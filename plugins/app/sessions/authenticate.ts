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

export function bearerToken (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header === undefined) return undefined
  const match = /^bearer +([^ ]+) *$/i.exec(header)
  if (!match) throw new AppError('token_invalid', { message: 'The Authorization header must be "Bearer <token>".' })
  return match[1]
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

  app.decorate('authenticate', async (request: FastifyRequest) => {
    const token = bearerToken(request)
    if (token === undefined) throw new AppError('token_missing')
    const claims = app.tokens.verify(token, 'access')
    const user = await app.principalOf(claims)
    await app.binding.enforce('access', claims, clientOf(request))
    request.user = user
  })

  app.decorate('requireVerified', async (request: FastifyRequest) => {
    if (!request.user?.emailVerified) throw new AppError('email_not_verified')
  })

  app.decorate('requireRole', (role: User['role']) => async (request: FastifyRequest) => {
    if (request.user?.role !== role) throw new AppError('forbidden')
  })
}, { name: 'authenticate', dependencies: ['config', 'tokens', 'auth-state', 'binding'] })
