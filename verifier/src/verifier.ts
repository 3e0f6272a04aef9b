import { EventEmitter } from 'node:events'
import { calculateJwkThumbprint, compactDecrypt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose'
import { VerifierError, type VerifierErrorCode } from './errors.js'
import { createDpopChecker, type DpopRequest } from './dpop.js'
import { followFeed, type RevocationEvent } from './feed.js'
import { createKeySet, signingAlgorithms } from './jwks.js'
import { createRevocations } from './revocations.js'

export interface VerifierOptions {
  /** latchkey's `JWT_ISSUER`. */
  issuer: string
  /** latchkey's `JWT_AUDIENCE`. */
  audience: string
  /** `https://auth.example.com/.well-known/jwks.json` */
  jwksUrl: string | URL
  /** The revocation stream, `https://auth.example.com/revocations/stream`. */
  feedUrl: string | URL
  /** latchkey's `REVOCATION_FEED_TOKEN`. */
  feedToken: string
  /** Seconds the feed may be down before tokens are refused (or introspected); 30 by default. */
  staleAfter?: number
  /** While the feed is stale, ask latchkey about each token (`POST /auth/token/verify`) instead of refusing it. */
  fallback?: 'introspect'
  /** Where to ask; by default `/auth/token/verify` at the origin of `jwksUrl`. */
  introspectUrl?: string | URL
  /**
   * latchkey's `TOKEN_ENCRYPTION_KEY` (base64url), then any of its previous
   * keys, when tokens are encrypted. Without it encrypted tokens are refused;
   * with it, only encrypted ones are accepted.
   */
  encryptionKey?: string | string[]
  /** Seconds of clock skew tolerated on `exp`, `nbf` and `iat` (latchkey's `JWT_LEEWAY`); 0 by default. */
  clockTolerance?: number
  /** Seconds a DPoP proof stays acceptable after its `iat` (latchkey's `DPOP_PROOF_MAX_AGE`); 60 by default. */
  dpopProofMaxAge?: number
  /** The fetch to reach latchkey with; `globalThis.fetch` by default. */
  fetch?: typeof fetch
}

/** The claims of an access token latchkey issued (SPEC §4.1), checked. */
export interface AccessClaims extends JWTPayload {
  iss: string
  aud: string | string[]
  /** The user's id. */
  sub: string
  /** The session's id. */
  sid: string
  jti: string
  iat: number
  exp: number
  /** The user's token version when the token was issued. */
  ver: number
  typ: 'access'
  /** As at issue time: latchkey itself reads the fresh role and verification; a service that needs them fresh asks latchkey. */
  role: 'user' | 'admin'
  email_verified: boolean
  /** Present on DPoP-bound tokens: the bound key's RFC 7638 thumbprint. */
  cnf?: { jkt: string }
}

export interface VerifyOptions {
  /** The request's DPoP proof, for tokens bound to a key (sent as `Authorization: DPoP <token>`). */
  dpop?: DpopRequest
}

export interface VerifierEvents {
  /** A revocation arrived and is applied. */
  revocation: [RevocationEvent]
  /** The feed no longer reaches back to where the verifier resumed; what it dropped concerned expired tokens only. */
  reset: []
  connected: []
  disconnected: [Error]
  /** The feed has been down longer than `staleAfter`: tokens are refused (or introspected) until it is back. */
  stale: []
}

export interface Verifier extends EventEmitter<VerifierEvents> {
  /** The claims of a valid, unrevoked access token; otherwise throws a `VerifierError`. */
  verify (token: string, options?: VerifyOptions): Promise<AccessClaims>
  /** Resolves once the JWKS is loaded and the feed caught up and followed. */
  ready (): Promise<void>
  /** Whether the feed is followed closely enough to trust local checks. */
  readonly fresh: boolean
  /** The highest revocation `seq` applied. */
  readonly lastSeq: number
  close (): Promise<void>
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const isSeconds = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0

function isAccessClaims (payload: JWTPayload): payload is AccessClaims {
  const p = payload as Partial<AccessClaims>
  return typeof p.sub === 'string' && uuid.test(p.sub) && typeof p.sid === 'string' && uuid.test(p.sid) &&
    typeof p.jti === 'string' && isSeconds(p.iat) && isSeconds(p.exp) && isSeconds(p.ver) && p.typ === 'access' &&
    (p.role === 'user' || p.role === 'admin') && typeof p.email_verified === 'boolean' &&
    (p.cnf === undefined || (typeof p.cnf === 'object' && p.cnf !== null && typeof p.cnf.jkt === 'string'))
}

const fail = (code: VerifierErrorCode) => new VerifierError(code)

// latchkey's one JWE profile (SPEC §10): `dir` with A256GCM around the signed token.
async function decryptionKeys (keys: string | string[] | undefined): Promise<Map<string, Uint8Array> | undefined> {
  if (keys === undefined) return undefined
  const list = Array.isArray(keys) ? keys : [keys]
  return new Map(await Promise.all(list.map(async (k): Promise<[string, Uint8Array]> => {
    const bytes = Buffer.from(k, 'base64url')
    if (bytes.length !== 32) throw new Error('encryptionKey must be 32 bytes, base64url (latchkey\'s TOKEN_ENCRYPTION_KEY)')
    return [await calculateJwkThumbprint({ kty: 'oct', k: bytes.toString('base64url') }), new Uint8Array(bytes)]
  })))
}

export function createVerifier (options: VerifierOptions): Verifier {
  const fetcher = options.fetch ?? globalThis.fetch
  const staleAfter = (options.staleAfter ?? 30) * 1000
  const clockTolerance = options.clockTolerance ?? 0
  const jwksUrl = new URL(options.jwksUrl)
  const introspectUrl = new URL(options.introspectUrl ?? new URL('/auth/token/verify', jwksUrl.origin))
  const events = new EventEmitter<VerifierEvents>()
  const keys = createKeySet({ url: jwksUrl, fetch: fetcher, unknownKidCooldown: 30_000 })
  const revocations = createRevocations()
  const dpop = createDpopChecker({ maxAge: options.dpopProofMaxAge ?? 60, clockTolerance })
  const encryption = decryptionKeys(options.encryptionKey)
  // A rejected promise nobody awaited yet must not take the process down; verify() awaits it and throws.
  encryption.catch(() => {})

  let staleTimer: NodeJS.Timeout | undefined
  let firstConnection: (() => void) | undefined
  const connectedOnce = new Promise<void>(resolve => { firstConnection = resolve })
  const feed = followFeed({
    streamUrl: new URL(options.feedUrl),
    token: options.feedToken,
    fetch: fetcher,
    on: {
      revocation (event) {
        revocations.apply(event)
        events.emit('revocation', event)
      },
      reset () { events.emit('reset') },
      connected () {
        clearTimeout(staleTimer)
        staleTimer = undefined
        firstConnection?.()
        events.emit('connected')
      },
      disconnected (error) {
        if (staleTimer === undefined && feed.downSince > 0) announceStale()
        events.emit('disconnected', error)
      }
    }
  })

  // Timers and the wall clock can disagree by a millisecond: the event waits until the clock agrees.
  function announceStale (): void {
    staleTimer = setTimeout(() => {
      if (isFresh()) announceStale()
      else events.emit('stale')
    }, Math.max(0, feed.downSince + staleAfter - Date.now()) + 1)
    staleTimer.unref()
  }

  const pruning = setInterval(() => {
    revocations.prune(Math.floor(Date.now() / 1000), clockTolerance)
    dpop.prune(Date.now())
  }, 60_000)
  pruning.unref()

  const isFresh = () => feed.connected || (feed.downSince > 0 && Date.now() - feed.downSince < staleAfter)

  /** The signed token inside: decrypted when latchkey encrypts, never a bare JWS then (no downgrade). */
  async function signedToken (token: string): Promise<string> {
    const decryption = await encryption
    const isJwe = token.split('.').length === 5
    if (decryption === undefined) {
      if (isJwe) throw new VerifierError('token_invalid', 'The access token is encrypted and this service holds no encryptionKey.')
      return token
    }
    if (!isJwe) throw fail('token_invalid')
    try {
      const header = decodeProtectedHeader(token)
      const key = typeof header.kid === 'string' ? decryption.get(header.kid) : undefined
      if (key === undefined || header.cty !== 'JWT') throw fail('token_invalid')
      const { plaintext } = await compactDecrypt(token, key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] })
      return new TextDecoder().decode(plaintext)
    } catch {
      throw fail('token_invalid')
    }
  }

  async function checkSignature (jws: string): Promise<AccessClaims> {
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(jws)
    } catch {
      throw fail('token_invalid')
    }
    if (typeof header.kid !== 'string' || typeof header.alg !== 'string' || !signingAlgorithms.includes(header.alg as typeof signingAlgorithms[number])) throw fail('token_invalid')
    const key = await keys.keyFor(header.kid, header.alg)
    if (key === undefined) throw fail('token_invalid')
    let payload: JWTPayload
    try {
      payload = (await jwtVerify(jws, key, {
        issuer: options.issuer,
        audience: options.audience,
        algorithms: [header.alg],
        typ: 'at+jwt',
        clockTolerance,
        requiredClaims: ['iss', 'aud', 'sub', 'jti', 'iat', 'exp']
      })).payload
    } catch (err) {
      throw fail(err instanceof errors.JWTExpired ? 'token_expired' : 'token_invalid')
    }
    if (!isAccessClaims(payload)) throw fail('token_invalid')
    // A token from the future was not issued by latchkey.
    if (payload.iat > Date.now() / 1000 + clockTolerance) throw fail('token_invalid')
    return payload
  }

  /** latchkey's own answer, for when the feed cannot be trusted (SPEC §4.4). */
  async function introspect (token: string): Promise<void> {
    let response: Response
    let body: { valid?: unknown, code?: unknown }
    try {
      response = await fetcher(introspectUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ token }),
        signal: AbortSignal.timeout(5_000)
      })
      body = await response.json() as typeof body
    } catch {
      throw fail('service_unavailable')
    }
    if (response.status === 200 && body.valid === true) return
    if (response.status !== 401) throw fail('service_unavailable')
    // A disabled account's tokens are revoked ones to this service: it cannot tell them apart from the feed either.
    if (body.code === 'token_expired' || body.code === 'token_invalid') throw fail(body.code)
    throw fail('token_revoked')
  }

  async function verify (token: string, verifyOptions: VerifyOptions = {}): Promise<AccessClaims> {
    if (typeof token !== 'string' || token === '') throw fail('token_missing')
    const claims = await checkSignature(await signedToken(token))
    // Tokens this service cannot fully check are refused, never taken as bearer tokens (SPEC §14.1).
    if (claims.bnd !== undefined) throw new VerifierError('token_binding_mismatch', 'The access token is bound to a client only latchkey can check.')
    if (claims.cnf !== undefined) {
      if (verifyOptions.dpop === undefined) throw fail('token_binding_mismatch')
      await dpop.check(verifyOptions.dpop, token, claims.cnf.jkt)
    }
    if (revocations.isRevoked(claims)) throw fail('token_revoked')
    if (!isFresh()) {
      if (options.fallback !== 'introspect') throw fail('service_unavailable')
      await introspect(token)
    }
    return claims
  }

  let closing: Promise<void> | undefined
  let markClosed: (err: Error) => void = () => {}
  const closed = new Promise<never>((_resolve, reject) => { markClosed = reject })
  closed.catch(() => {})

  return Object.defineProperties(Object.assign(events, {
    verify,
    async ready () {
      await Promise.race([connectedOnce, closed])
      await keys.refresh()
    },
    close () {
      closing ??= (async () => {
        clearInterval(pruning)
        clearTimeout(staleTimer)
        markClosed(new Error('the verifier was closed'))
        await feed.close()
      })()
      return closing
    }
  }), {
    fresh: { get: isFresh, enumerable: true },
    lastSeq: { get: () => feed.last, enumerable: true }
  }) as Verifier
}
