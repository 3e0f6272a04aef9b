import { base64url, calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose'
import { VerifierError } from './errors.js'

/** What a request proves possession of the bound key with (RFC 9449): the `DPoP` header, and the request it was made for. */
export interface DpopRequest {
  /** The `DPoP` header; undefined when the request had none. */
  proof?: string
  method: string
  /** The request's full URL, as the client addressed it. */
  url: string
}

const proofAlgorithms = ['ES256', 'EdDSA', 'RS256']

const invalid = (message: string) => new VerifierError('dpop_proof_invalid', `The DPoP proof is not valid: ${message}.`)

// RFC 9449 §4.3: `htu` is compared without query and fragment, after URL normalisation.
function withoutQuery (url: string): string | undefined {
  try {
    const parsed = new URL(url)
    parsed.search = ''
    parsed.hash = ''
    return parsed.href
  } catch {
    return undefined
  }
}

async function sha256 (text: string): Promise<string> {
  return base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))))
}

/** RFC 9449 §4.3 and §7.1: a proof for this request, by the token's key, for this very token, seen once. */
export function createDpopChecker (options: { maxAge: number, clockTolerance: number }) {
  // jti → when the proof stops being acceptable anyway (ms); a replay before then is refused.
  const seen = new Map<string, number>()

  async function check (request: DpopRequest, token: string, jkt: string): Promise<void> {
    const { proof } = request
    if (proof === undefined || proof === '') throw invalid('the request carries no DPoP header')
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(proof)
    } catch {
      throw invalid('it is not a JWT')
    }
    const jwk = header.jwk as JWK | undefined
    if (header.typ !== 'dpop+jwt' || !proofAlgorithms.includes(header.alg as string) || !jwk || 'd' in jwk || 'k' in jwk) {
      throw invalid('its header needs typ dpop+jwt, an asymmetric alg and the public jwk')
    }
    let payload: Record<string, unknown>
    try {
      const key = await importJWK(jwk, header.alg)
      payload = (await jwtVerify(proof, key, {
        typ: 'dpop+jwt',
        algorithms: proofAlgorithms,
        maxTokenAge: options.maxAge,
        clockTolerance: options.clockTolerance
      })).payload
    } catch {
      throw invalid('its signature, iat or age does not check')
    }
    if (typeof payload.jti !== 'string' || payload.jti === '') throw invalid('it has no jti')
    if (payload.htm !== request.method.toUpperCase()) throw invalid('htm is not the request method')
    const htu = typeof payload.htu === 'string' ? withoutQuery(payload.htu) : undefined
    if (htu === undefined || htu !== withoutQuery(request.url)) throw invalid('htu is not the request URL')
    if (payload.ath !== await sha256(token)) throw invalid('ath is not the hash of this token')
    if (await calculateJwkThumbprint(jwk, 'sha256') !== jkt) throw invalid('it is not signed by the key the token is bound to')
    const now = Date.now()
    const until = seen.get(payload.jti)
    if (until !== undefined && until > now) throw invalid('it was used before')
    seen.set(payload.jti, ((payload.iat as number) + options.maxAge + options.clockTolerance) * 1000)
  }

  function prune (now: number): void {
    for (const [jti, until] of seen) if (until <= now) seen.delete(jti)
  }

  return { check, prune }
}
