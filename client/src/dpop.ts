// DPoP proofs (RFC 9449 §4.2) with WebCrypto only, so they are made alike in browsers and Node.

type ProofAlgorithm = 'ES256' | 'EdDSA' | 'RS256'

const algorithms: Record<string, ProofAlgorithm> = { ECDSA: 'ES256', Ed25519: 'EdDSA', 'RSASSA-PKCS1-v1_5': 'RS256' }
// The members of each key type's public JWK (RFC 7518 §6, RFC 8037): nothing private is ever sent.
const publicMembers: Record<string, string[]> = { EC: ['kty', 'crv', 'x', 'y'], OKP: ['kty', 'crv', 'x'], RSA: ['kty', 'n', 'e'] }

function base64url (bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
const encode = (value: object) => base64url(new TextEncoder().encode(JSON.stringify(value)))

export type ProofMaker = (method: string, url: string, accessToken?: string) => Promise<string>

/** Makes a fresh proof per call for the key pair: ES256 (P-256), EdDSA (Ed25519) or RS256 (SHA-256). */
export function proofMaker (pair: CryptoKeyPair): ProofMaker {
  const alg = algorithms[pair.privateKey.algorithm.name]
  if (alg === undefined) throw new TypeError(`A DPoP key must be ECDSA P-256, Ed25519 or RSASSA-PKCS1-v1_5, not ${pair.privateKey.algorithm.name}.`)
  const signing = alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: pair.privateKey.algorithm.name }
  let header: Promise<string> | undefined
  const headerOf = async () => {
    const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey) as Record<string, unknown>
    const members = publicMembers[String(jwk.kty)] ?? []
    return encode({ typ: 'dpop+jwt', alg, jwk: Object.fromEntries(members.map(name => [name, jwk[name]])) })
  }

  return async (method, url, accessToken) => {
    header ??= headerOf()
    const target = new URL(url)
    const claims: Record<string, unknown> = {
      jti: crypto.randomUUID(),
      htm: method.toUpperCase(),
      // RFC 9449 §4.2: the URL without query and fragment.
      htu: target.origin + target.pathname,
      iat: Math.floor(Date.now() / 1000)
    }
    if (accessToken !== undefined) {
      claims.ath = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))))
    }
    const input = `${await header}.${encode(claims)}`
    const signature = await crypto.subtle.sign(signing, pair.privateKey, new TextEncoder().encode(input))
    return `${input}.${base64url(new Uint8Array(signature))}`
  }
}
