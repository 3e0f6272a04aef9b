import { importJWK, type CryptoKey, type JWK } from 'jose'
import { VerifierError } from './errors.js'

/** The algorithms latchkey publishes keys for (SPEC §10): one per key, named by the key's `alg`. */
export const signingAlgorithms = ['RS256', 'ES256', 'EdDSA'] as const

interface PublishedKey { alg: string, key: Promise<CryptoKey | Uint8Array> }

// Without a max-age the copy is kept as long as latchkey's own default (JWKS_MAX_AGE).
const defaultMaxAge = 300
// After a failed refetch the stale copy serves this long before the next try.
const retryAfterFailure = 5_000

/** `max-age` of a Cache-Control header in seconds; `no-store` and `no-cache` mean 0. */
export function maxAgeOf (cacheControl: string | null): number {
  if (cacheControl === null) return defaultMaxAge
  if (/(^|,)\s*(no-store|no-cache)\s*(,|$)/i.test(cacheControl)) return 0
  const match = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i.exec(cacheControl)
  return match ? Number(match[1]) : defaultMaxAge
}

/**
 * latchkey's public keys, cached for the JWKS reply's max-age. A `kid` not in
 * the copy refetches at once — a key rotated in since — but such refetches
 * happen at most once per `unknownKidCooldown`, so tokens with made-up kids
 * cannot make the verifier hammer latchkey.
 */
export function createKeySet (options: { url: URL, fetch: typeof fetch, unknownKidCooldown: number }) {
  const { url, unknownKidCooldown } = options
  let keys = new Map<string, PublishedKey>()
  let loaded = false
  let expiresAt = 0
  let lastUnknownKidFetch = -Infinity
  let inflight: Promise<void> | undefined

  async function load (): Promise<void> {
    const response = await options.fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5_000) })
    if (response.status !== 200) throw new Error(`the JWKS answered ${response.status}`)
    const body = await response.json() as { keys?: unknown }
    if (!Array.isArray(body.keys)) throw new Error('the JWKS holds no "keys" array')
    const next = new Map<string, PublishedKey>()
    for (const jwk of body.keys as JWK[]) {
      if (typeof jwk.kid !== 'string' || !signingAlgorithms.includes(jwk.alg as typeof signingAlgorithms[number]) || 'd' in jwk) continue
      const { kty, crv, x, y, n, e } = jwk
      const key = importJWK({ kty, crv, x, y, n, e }, jwk.alg)
      // A key that does not import fails the tokens it signed, not the whole set.
      key.catch(() => {})
      next.set(jwk.kid, { alg: jwk.alg as string, key })
    }
    keys = next
    loaded = true
    expiresAt = Date.now() + maxAgeOf(response.headers.get('cache-control')) * 1000
  }

  function refresh (): Promise<void> {
    inflight ??= load().finally(() => { inflight = undefined })
    return inflight
  }

  async function refreshKeepingStale (): Promise<void> {
    try {
      await refresh()
    } catch (err) {
      // Keys are published long before they sign and retired long after (SPEC §10): a stale copy is safe to use a while.
      if (!loaded) throw new VerifierError('service_unavailable', `The JWKS cannot be fetched: ${(err as Error).message}.`)
      expiresAt = Date.now() + retryAfterFailure
    }
  }

  /** The key that verifies a token with this header, or undefined when latchkey publishes none for it. */
  async function keyFor (kid: string, alg: string): Promise<CryptoKey | Uint8Array | undefined> {
    if (Date.now() >= expiresAt) await refreshKeepingStale()
    let published = keys.get(kid)
    if (!published && Date.now() - lastUnknownKidFetch >= unknownKidCooldown) {
      lastUnknownKidFetch = Date.now()
      await refreshKeepingStale()
      published = keys.get(kid)
    }
    // Each key has exactly one algorithm: a token whose header names another is refused.
    if (!published || published.alg !== alg) return undefined
    return await published.key.catch(() => undefined)
  }

  return { keyFor, refresh }
}
