import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import { TokenError } from 'fast-jwt'
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Kysely, Transaction } from 'kysely'
import type { Database, User } from '../../../db/schema.js'
import { insertRefreshToken } from '../../../db/queries/refresh-tokens.js'
import { AppError, type ErrorCode } from '../../infra/errors.js'
import type { Tokens } from '../../../openapi/components.js'

const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' })
const Seconds = Type.Integer({ minimum: 0 })
const Common = {
  iss: Type.String(),
  aud: Type.Union([Type.String(), Type.Array(Type.String())]),
  sub: Uuid,
  sid: Uuid,
  jti: Uuid,
  iat: Seconds,
  exp: Seconds,
  nbf: Type.Optional(Seconds),
  ver: Type.Integer({ minimum: 0 })
}

export const AccessClaimsSchema = Type.Object({
  ...Common,
  typ: Type.Literal('access'),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin')]),
  email_verified: Type.Boolean()
})
export const RefreshClaimsSchema = Type.Object({ ...Common, typ: Type.Literal('refresh') })
export type AccessClaims = Static<typeof AccessClaimsSchema>
export type RefreshClaims = Static<typeof RefreshClaimsSchema>
export type TokenKind = 'access' | 'refresh'

const checkers = { access: TypeCompiler.Compile(AccessClaimsSchema), refresh: TypeCompiler.Compile(RefreshClaimsSchema) }
const required = ['iss', 'aud', 'sub', 'sid', 'jti', 'iat', 'exp', 'ver', 'typ']

// Every way fast-jwt can refuse a token, as the code a client sees: expired, or invalid.
const reason = (err: unknown): ErrorCode =>
  err instanceof TokenError && err.code === TokenError.codes.expired ? 'token_expired' : 'token_invalid'

const now = () => Math.floor(Date.now() / 1000)

export interface Principal {
  id: string
  role: User['role']
  emailVerified: boolean
  tokenVersion: number
}

export interface RefreshRecord {
  jti: string
  sessionId: string
  iat: number
  exp: number
}

function createTokens (app: FastifyInstance) {
  const { config } = app
  const leeway = config.JWT_LEEWAY
  // One @fastify/jwt namespace per kind, each with its own fixed verify options.
  const jwt = app.jwt as unknown as Record<TokenKind, JWT>

  /** Signs a token of the given kind; `iat` and `exp` are in the claims so a refresh token can be signed again identically. */
  function sign (kind: 'access', claims: Omit<AccessClaims, 'iss' | 'aud' | 'typ'>): string
  function sign (kind: 'refresh', claims: Omit<RefreshClaims, 'iss' | 'aud' | 'typ'>): string
  function sign (kind: TokenKind, claims: object): string {
    return jwt[kind].sign({ ...claims, iss: config.JWT_ISSUER, aud: config.JWT_AUDIENCE, typ: kind })
  }

  /** Verifies signature, algorithm, issuer, audience, lifetime and the shape of every claim. */
  function verify (token: string, kind: 'access'): AccessClaims
  function verify (token: string, kind: 'refresh'): RefreshClaims
  function verify (token: string, kind: TokenKind): AccessClaims | RefreshClaims {
    let payload: unknown
    try {
      payload = jwt[kind].verify(token)
    } catch (err) {
      throw new AppError(reason(err))
    }
    if (!checkers[kind].Check(payload)) throw new AppError('token_invalid')
    // fast-jwt does not look at `iat`; a token from the future was not issued by us.
    if (payload.iat > now() + leeway) throw new AppError('token_invalid')
    return payload
  }

  function accessFor (user: Principal, sessionId: string): string {
    const iat = now()
    return sign('access', {
      sub: user.id,
      sid: sessionId,
      jti: randomUUID(),
      iat,
      exp: iat + config.ACCESS_TOKEN_TTL,
      ver: user.tokenVersion,
      role: user.role,
      email_verified: user.emailVerified
    })
  }

  function refreshFor (user: Principal, record: RefreshRecord): string {
    return sign('refresh', { sub: user.id, sid: record.sessionId, jti: record.jti, iat: record.iat, exp: record.exp, ver: user.tokenVersion })
  }

  function pair (user: Principal, sessionId: string, refresh?: RefreshRecord): Tokens {
    const tokens: Tokens = {
      accessToken: accessFor(user, sessionId),
      tokenType: 'Bearer',
      expiresIn: config.ACCESS_TOKEN_TTL
    }
    if (refresh) {
      tokens.refreshToken = refreshFor(user, refresh)
      tokens.refreshExpiresIn = refresh.exp - now()
    }
    return tokens
  }

  /** Records a new refresh token of the session (child of `parentJti` when rotating) and returns the pair. */
  async function issue (trx: Kysely<Database> | Transaction<Database>, user: Principal, sessionId: string, parentJti: string | null = null): Promise<{ tokens: Tokens, refresh: RefreshRecord }> {
    const iat = now()
    const refresh = { jti: randomUUID(), sessionId, iat, exp: iat + config.REFRESH_TOKEN_TTL }
    await insertRefreshToken(trx, { ...refresh, userId: user.id, parentJti })
    return { tokens: pair(user, sessionId, refresh), refresh }
  }

  return { verify, pair, issue, decode: (token: string) => jwt.access.decode<Record<string, unknown>>(token) }
}

export type TokenService = ReturnType<typeof createTokens>

declare module 'fastify' {
  interface FastifyInstance {
    tokens: TokenService
  }
}

export default fp(async (app) => {
  const { config } = app
  const key = Buffer.from(config.JWT_SECRET, 'utf8')
  for (const kind of ['access', 'refresh'] as const) {
    await app.register(fastifyJwt, {
      namespace: kind,
      secret: key,
      decoratorName: `${kind}Claims`,
      sign: {
        algorithm: config.JWT_ALGORITHM,
        // Access tokens say what they are in the header too (RFC 9068).
        header: kind === 'access' ? { typ: 'at+jwt' } as JWT['options']['sign']['header'] : undefined
      },
      verify: {
        algorithms: [config.JWT_ALGORITHM],
        allowedIss: config.JWT_ISSUER,
        allowedAud: config.JWT_AUDIENCE,
        requiredClaims: required,
        checkTyp: kind === 'access' ? 'at+jwt' : undefined,
        clockTolerance: config.JWT_LEEWAY * 1000,
        // Verified signatures are remembered briefly; claims and revocation are still checked every time.
        cache: 10_000
      }
    })
  }
  app.decorate('tokens', createTokens(app))
}, { name: 'tokens', dependencies: ['config'] })
