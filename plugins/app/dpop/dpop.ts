import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../../infra/errors.js'
import { thumbprint } from '../tokens/keys.js'

type ProofAlgorithm = 'ES256' | 'EdDSA' | 'RS256'

// The asymmetric algorithms a proof may use (SPEC §8.1), each with the key type it needs.
const keyTypes: Record<ProofAlgorithm, { kty: string, crv?: string, members: string[] }> = {
  ES256: { kty: 'EC', crv: 'P-256', members: ['crv', 'x', 'y'] },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', members: ['crv', 'x'] },
  RS256: { kty: 'RSA', members: ['n', 'e'] }
}
const isProofAlgorithm = (alg: unknown): alg is ProofAlgorithm => typeof alg === 'string' && Object.hasOwn(keyTypes, alg)

// Members of a private (or symmetric) JWK: a proof's `jwk` is public, or it is refused (RFC 9449 §4.3).
const privateMembers = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

const compactJws = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
// Larger than any proof by an RSA-4096 key; the header limit bounds it anyway.
const maxProofLength = 8192
const maxJtiLength = 256
const maxKeys = 10_000

const sha256 = (value: string) => createHash('sha256').update(value).digest('base64url')

function jsonObject (segment: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** scheme://host/path of an absolute http(s) URL without query, fragment or credentials, normalised by the URL parser; else undefined. */
function target (url: string): string | undefined {
  if (url.includes('?') || url.includes('#')) return undefined
  try {
    const parsed = new URL(url)
    if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.username !== '' || parsed.password !== '') return undefined
    return parsed.origin + parsed.pathname
  } catch {
    return undefined
  }
}

const invalid = (message: string) => new AppError('dpop_proof_invalid', { message })

function createDpop (app: FastifyInstance) {
  const { DPOP: mode, DPOP_PROOF_MAX_AGE: maxAge, JWT_LEEWAY: leeway } = app.config
  // A proof is acceptable until its iat is older than maxAge + leeway, and its iat may lie leeway ahead:
  // its jti is remembered for all of that (at least DPOP_PROOF_MAX_AGE + JWT_LEEWAY).
  const jtiTtl = maxAge + 2 * leeway + 1
  // Public keys by thumbprint: a client signs every request with the same key.
  const keys = new Map<string, KeyObject>()

  function publicKey (alg: ProofAlgorithm, jwk: Record<string, unknown>): { key: KeyObject, jkt: string } {
    const type = keyTypes[alg]
    if (privateMembers.some(name => name in jwk)) throw invalid('The DPoP proof\'s jwk holds a private key.')
    if (jwk.kty !== type.kty || (type.crv !== undefined && jwk.crv !== type.crv) || (jwk.alg !== undefined && jwk.alg !== alg)) {
      throw invalid(`The DPoP proof's jwk is not a key for ${alg}.`)
    }
    if (!type.members.every(name => typeof jwk[name] === 'string')) throw invalid('The DPoP proof\'s jwk is incomplete.')
    const jkt = thumbprint(jwk)
    let key = keys.get(jkt)
    if (key === undefined) {
      try {
        key = createPublicKey({ key: Object.fromEntries(['kty', ...type.members].map(name => [name, jwk[name]])), format: 'jwk' })
      } catch {
        throw invalid('The DPoP proof\'s jwk is not a valid key.')
      }
      if (alg === 'RS256' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw invalid('The DPoP proof\'s RSA key is shorter than 2048 bits.')
      if (keys.size >= maxKeys) keys.delete(keys.keys().next().value as string)
      keys.set(jkt, key)
    }
    return { key, jkt }
  }

  function signatureValid (alg: ProofAlgorithm, key: KeyObject, signingInput: string, signature: Buffer): boolean {
    const data = Buffer.from(signingInput, 'ascii')
    try {
      switch (alg) {
        case 'ES256': return signature.length === 64 && verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
        case 'EdDSA': return verify(null, data, key, signature)
        case 'RS256': return verify('sha256', data, key, signature)
      }
    } catch {
      return false
    }
  }

  /** This request's URL as the proof must name it: scheme and host as TRUST_PROXY resolves them, the path, no query. */
  function requestTarget (request: FastifyRequest): string | undefined {
    const path = request.url.split('?')[0]
    return target(`${request.protocol}://${request.host}${path}`)
  }

  /**
   * RFC 9449 §4.3, every check: the proof's syntax, `typ`, `alg`, public
   * `jwk`, signature, `htm`, `htu`, `iat` window, `ath` over the access token
   * (resource requests), the key (when the token is bound to one), and last,
   * so that no refused proof uses up its id, `jti` never seen before on any
   * instance. Returns the key's RFC 7638 thumbprint.
   */
  async function check (request: FastifyRequest, proof: string, bound?: { accessToken: string, jkt: string }): Promise<string> {
    if (proof.length > maxProofLength || !compactJws.test(proof)) throw invalid('The DPoP header must hold one proof JWT.')
    const [encodedHeader, encodedClaims, encodedSignature] = proof.split('.')
    const header = jsonObject(encodedHeader)
    const claims = jsonObject(encodedClaims)
    if (!header || !claims) throw invalid('The DPoP proof is not a JWT.')
    if (header.typ !== 'dpop+jwt') throw invalid('The DPoP proof\'s typ must be "dpop+jwt".')
    if (!isProofAlgorithm(header.alg)) throw invalid('The DPoP proof\'s alg must be ES256, EdDSA or RS256.')
    if ('crit' in header) throw invalid('The DPoP proof has critical header parameters this server does not know.')
    const jwk = header.jwk
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw invalid('The DPoP proof has no jwk header.')
    const { key, jkt } = publicKey(header.alg, jwk as Record<string, unknown>)
    if (!signatureValid(header.alg, key, `${encodedHeader}.${encodedClaims}`, Buffer.from(encodedSignature, 'base64url'))) {
      throw invalid('The DPoP proof\'s signature is not valid under its jwk.')
    }

    const { jti, htm, htu, iat, ath } = claims
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > maxJtiLength) throw invalid('The DPoP proof needs a jti.')
    if (htm !== request.method) throw invalid('The DPoP proof\'s htm is not this request\'s method.')
    const expected = requestTarget(request)
    if (typeof htu !== 'string' || expected === undefined || target(htu) !== expected) throw invalid('The DPoP proof\'s htu is not this request\'s URL.')
    if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('The DPoP proof needs an iat.')
    const now = Date.now() / 1000
    if (iat > now + leeway) throw invalid('The DPoP proof is issued in the future.')
    if (iat < now - maxAge - leeway) throw invalid('The DPoP proof has expired.')
    if (bound !== undefined) {
      if (ath !== sha256(bound.accessToken)) throw invalid('The DPoP proof\'s ath is not the hash of this access token.')
      if (jkt !== bound.jkt) throw invalid('The DPoP proof is not signed by the key the token is bound to.')
    }
    // Keyed by the key too: one client's ids never collide with another's.
    if (!await app.cache.claimOnce(`dpop:${sha256(`${jkt}.${jti}`)}`, jtiTtl)) throw invalid('The DPoP proof was used before.')
    return jkt
  }

  /** The one proof a request carries, or undefined; a repeated header (joined by Node) is no proof. */
  function proofOf (request: FastifyRequest): string | undefined {
    const value = request.headers.dpop
    if (value === undefined) return undefined
    if (typeof value !== 'string') throw invalid('The DPoP header must hold one proof JWT.')
    return value
  }

  return {
    mode,
    /**
     * At register, login and refresh: the thumbprint of the key to bind the
     * session to, or undefined when no proof was sent and DPOP is not
     * `required`. A proof sent and invalid is refused (never an unbound
     * session instead): 400 `dpop_proof_invalid`. Under DPOP=off proofs are ignored.
     */
    async issuing (request: FastifyRequest): Promise<string | undefined> {
      if (mode === 'off') return undefined
      try {
        const proof = proofOf(request)
        if (proof === undefined) {
          if (mode === 'required') throw invalid('A DPoP proof is required (DPOP=required).')
          return undefined
        }
        return await check(request, proof)
      } catch (err) {
        throw err instanceof AppError ? new AppError(err.code, { statusCode: 400, message: err.message }) : err
      }
    },
    /** On a protected route, for an access token bound to `jkt`: a fresh proof of this request by that key, else 401 `dpop_proof_invalid`. */
    async enforce (request: FastifyRequest, accessToken: string, jkt: string): Promise<void> {
      const proof = proofOf(request)
      if (proof === undefined) throw invalid('A DPoP-bound token needs a DPoP proof with every request.')
      await check(request, proof, { accessToken, jkt })
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    dpop: ReturnType<typeof createDpop>
  }
}

export default fp(async (app) => {
  app.decorate('dpop', createDpop(app))
}, { name: 'dpop', dependencies: ['config', 'cache'] })
