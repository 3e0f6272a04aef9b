import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createDecoder, createSigner, createVerifier, TokenError } from 'fast-jwt'
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Kysely, Transaction } from 'kysely'
import type { Database, User } from '../../../db/schema.js'
import { insertRefreshToken } from '../../../db/queries/refresh-tokens.js'
import { AppError, type ErrorCode } from '../../infra/errors.js'
import type { Tokens } from '../../../openapi/components.js'
import type { Keyring } from './keys.js'

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
  ver: Type.Integer({ minimum: 0 }),
  // A keyed hash of the client the token is bound to (SPEC §8), when binding is on.
  bnd: Type.Optional(Type.String({ maxLength: 64 })),
  // The RFC 7638 thumbprint of the DPoP key the session is bound to (RFC 9449 §6, SPEC §8.1).
  cnf: Type.Optional(Type.Object({ jkt: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }) }))
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

/** The session a pair is issued for: no token outlives `endsAt` (seconds), each kind carries its `bnd`, if any, and both its DPoP key's `jkt`. */
export interface TokenSession {
  id: string
  endsAt: number
  bnd: Partial<Record<TokenKind, string>>
  jkt?: string
}

export interface RefreshRecord {
  jti: string
  sessionId: string
  iat: number
  exp: number
}

// Headers that point at a key somewhere else: a token never chooses its own key.
const foreignKeyHeaders = ['jku', 'x5u', 'jwk', 'x5c']

/** A base64url segment holding a JSON object, or undefined. Headers are only read to pick the key. */
function jsonObject (segment: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

const base64url = /^[A-Za-z0-9_-]*$/
const jweHeaderMembers = ['alg', 'cty', 'enc', 'kid']

/**
 * Compact JWE, one profile only (RFC 7516 with `dir` and A256GCM, RFC 7518
 * §5.3): the signed token is the plaintext, the protected header is the
 * additional data. Written on node:crypto rather than through jose so that
 * sealing and opening stay synchronous on the authentication path.
 */
function createSealer (encryption: NonNullable<Keyring['encryption']>) {
  const { current, accepted } = encryption
  const header = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: current.kid })).toString('base64url')

  function seal (jws: string): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', current.key, iv).setAAD(Buffer.from(header, 'ascii'))
    const ciphertext = Buffer.concat([cipher.update(jws, 'utf8'), cipher.final()])
    return `${header}..${iv.toString('base64url')}.${ciphertext.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}`
  }

  /** The signed token inside, or undefined for anything that is not our JWE under a key we hold. */
  function open (token: string): string | undefined {
    const parts = token.split('.')
    if (parts.length !== 5 || !parts.every(part => base64url.test(part))) return undefined
    const [encodedHeader, encryptedKey, encodedIv, encodedCiphertext, encodedTag] = parts
    const fields = jsonObject(encodedHeader)
    if (!fields || encryptedKey !== '') return undefined
    // Exactly the members we write: no `zip`, no `crit`, no other algorithm.
    if (Object.keys(fields).sort().join() !== jweHeaderMembers.join() || fields.alg !== 'dir' || fields.enc !== 'A256GCM' || fields.cty !== 'JWT') return undefined
    const key = typeof fields.kid === 'string' ? accepted.get(fields.kid) : undefined
    const iv = Buffer.from(encodedIv, 'base64url')
    const tag = Buffer.from(encodedTag, 'base64url')
    if (!key || iv.length !== 12 || tag.length !== 16) return undefined
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 }).setAAD(Buffer.from(encodedHeader, 'ascii')).setAuthTag(tag)
      return Buffer.concat([decipher.update(Buffer.from(encodedCiphertext, 'base64url')), decipher.final()]).toString('utf8')
    } catch {
      return undefined
    }
  }

  return { seal, open }
}

function createTokens (app: FastifyInstance) {
  const { config, keys } = app
  const leeway = config.JWT_LEEWAY
  const { signing } = keys
  const signers = {
    // Access tokens say what they are in the header too (RFC 9068).
    access: createSigner({ key: signing.material, algorithm: signing.alg, kid: signing.kid, header: { alg: signing.alg, typ: 'at+jwt' } }),
    refresh: createSigner({ key: signing.material, algorithm: signing.alg, kid: signing.kid })
  }
  // One verifier per accepted key and kind, built once: each allows its key's one algorithm only.
  const verifiers = new Map([...keys.accepted.values()].map(key => {
    const make = (kind: TokenKind) => createVerifier({
      key: key.material,
      algorithms: [key.alg],
      allowedIss: config.JWT_ISSUER,
      allowedAud: config.JWT_AUDIENCE,
      requiredClaims: required,
      checkTyp: kind === 'access' ? 'at+jwt' : undefined,
      clockTolerance: leeway * 1000
    })
    return [key.kid, { access: make('access'), refresh: make('refresh') }]
  }))
  const sealer = keys.encryption && createSealer(keys.encryption)
  const decodeUnverified = createDecoder()

  /** Signs a token of the given kind; `iat` and `exp` are in the claims so a refresh token can be signed again identically. */
  function sign (kind: 'access', claims: Omit<AccessClaims, 'iss' | 'aud' | 'typ'>): string
  function sign (kind: 'refresh', claims: Omit<RefreshClaims, 'iss' | 'aud' | 'typ'>): string
  function sign (kind: TokenKind, claims: object): string {
    const jws = signers[kind]({ ...claims, iss: config.JWT_ISSUER, aud: config.JWT_AUDIENCE, typ: kind })
    return sealer ? sealer.seal(jws) : jws
  }

  /** The signed token a client presented: with encryption on, only from inside our JWE (no downgrade to a bare JWS). */
  function unwrap (token: string): string {
    if (!sealer) return token
    const jws = sealer.open(token)
    if (jws === undefined) throw new AppError('token_invalid')
    return jws
  }

  // Access tokens whose every check passed, by their exact text: a client sends
  // the same one for its lifetime, and a string key costs no hash per request.
  // Only `exp` can change its verdict, so it is checked on every hit; the state
  // behind a token (revocation) is never cached here.
  const verified = new Map<string, AccessClaims>()
  const maxVerified = 10_000

  /** Verifies signature, algorithm, issuer, audience, lifetime and the shape of every claim. */
  function verify (token: string, kind: 'access'): AccessClaims
  function verify (token: string, kind: 'refresh'): RefreshClaims
  function verify (token: string, kind: TokenKind): AccessClaims | RefreshClaims {
    if (kind === 'refresh') return check(token, kind)
    const known = verified.get(token)
    if (known !== undefined) {
      if (now() < known.exp + leeway) return known
      verified.delete(token)
    }
    const claims = check(token, kind)
    if (verified.size >= maxVerified) verified.delete(verified.keys().next().value as string)
    verified.set(token, Object.freeze(claims))
    return claims
  }

  function check (token: string, kind: 'access'): AccessClaims
  function check (token: string, kind: 'refresh'): RefreshClaims
  function check (token: string, kind: TokenKind): AccessClaims | RefreshClaims {
    const jws = unwrap(token)
    const header = jsonObject(jws.slice(0, Math.max(jws.indexOf('.'), 0)))
    if (!header || foreignKeyHeaders.some(name => name in header) || typeof header.kid !== 'string') throw new AppError('token_invalid')
    const verifier = verifiers.get(header.kid)
    if (!verifier) throw new AppError('token_invalid')
    let payload: unknown
    try {
      payload = verifier[kind](jws)
    } catch (err) {
      throw new AppError(reason(err))
    }
    if (!checkers[kind].Check(payload)) throw new AppError('token_invalid')
    // fast-jwt does not look at `iat`; a token from the future was not issued by us.
    if (payload.iat > now() + leeway) throw new AppError('token_invalid')
    return payload
  }

  /** The claims of a token, unverified (they only pick which verifier runs); undefined when unreadable. */
  function decode (token: string): Record<string, unknown> | undefined {
    try {
      return decodeUnverified(unwrap(token)) as Record<string, unknown>
    } catch {
      return undefined
    }
  }

  const confirmation = (session: TokenSession) => session.jkt === undefined ? {} : { cnf: { jkt: session.jkt } }

  // No access token outlives its session's maximum lifetime (SPEC §8).
  const accessExp = (session: TokenSession, iat: number) => Math.min(iat + config.ACCESS_TOKEN_TTL, session.endsAt)

  function accessFor (user: Principal, session: TokenSession, iat: number): string {
    return sign('access', {
      sub: user.id,
      sid: session.id,
      jti: randomUUID(),
      iat,
      exp: accessExp(session, iat),
      ver: user.tokenVersion,
      role: user.role,
      email_verified: user.emailVerified,
      ...(session.bnd.access !== undefined && { bnd: session.bnd.access }),
      ...confirmation(session)
    })
  }

  function refreshFor (user: Principal, record: RefreshRecord, session: TokenSession): string {
    const bnd = session.bnd.refresh
    return sign('refresh', { sub: user.id, sid: record.sessionId, jti: record.jti, iat: record.iat, exp: record.exp, ver: user.tokenVersion, ...(bnd !== undefined && { bnd }), ...confirmation(session) })
  }

  function pair (user: Principal, session: TokenSession, refresh?: RefreshRecord): Tokens {
    const iat = now()
    const tokens: Tokens = {
      accessToken: accessFor(user, session, iat),
      tokenType: session.jkt === undefined ? 'Bearer' : 'DPoP',
      expiresIn: accessExp(session, iat) - iat
    }
    if (refresh) {
      tokens.refreshToken = refreshFor(user, refresh, session)
      tokens.refreshExpiresIn = refresh.exp - now()
    }
    return tokens
  }

  /** A new refresh token of the session, not yet recorded: its row is written by the caller's statement. */
  function mint (session: TokenSession): RefreshRecord {
    const iat = now()
    return { jti: randomUUID(), sessionId: session.id, iat, exp: Math.min(iat + config.REFRESH_TOKEN_TTL, session.endsAt) }
  }

  /** Records a new refresh token of the session (child of `parentJti` when rotating) and returns the pair. */
  async function issue (trx: Kysely<Database> | Transaction<Database>, user: Principal, session: TokenSession, parentJti: string | null = null): Promise<{ tokens: Tokens, refresh: RefreshRecord }> {
    const refresh = mint(session)
    await insertRefreshToken(trx, { ...refresh, userId: user.id, parentJti })
    return { tokens: pair(user, session, refresh), refresh }
  }

  return { verify, pair, mint, issue, decode }
}

export type TokenService = ReturnType<typeof createTokens>

declare module 'fastify' {
  interface FastifyInstance {
    tokens: TokenService
  }
}

export default fp(async (app) => {
  app.decorate('tokens', createTokens(app))
}, { name: 'tokens', dependencies: ['config', 'keys'] })
