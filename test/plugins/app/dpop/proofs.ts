import { createHash, createHmac, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto'
import { thumbprint } from '../../../../plugins/app/tokens/keys.js'

export type ProofAlgorithm = 'ES256' | 'EdDSA' | 'RS256'

/** A client's DPoP key pair, its public JWK and its RFC 7638 thumbprint. */
export interface DpopKey { alg: ProofAlgorithm, privateKey: KeyObject, jwk: Record<string, unknown>, jkt: string }

export function dpopKey (alg: ProofAlgorithm = 'ES256'): DpopKey {
  const pair = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const jwk = pair.publicKey.export({ format: 'jwk' }) as Record<string, unknown>
  return { alg, privateKey: pair.privateKey, jwk, jkt: thumbprint(jwk) }
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
export const ath = (accessToken: string) => createHash('sha256').update(accessToken).digest('base64url')

function signJws (alg: ProofAlgorithm, privateKey: KeyObject, input: string): string {
  const data = Buffer.from(input)
  if (alg === 'ES256') return sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')
  if (alg === 'EdDSA') return sign(null, data, privateKey).toString('base64url')
  return sign('sha256', data, privateKey).toString('base64url')
}

export interface ProofOptions {
  htm?: string
  htu: string
  /** The access token the proof is for (its `ath`). */
  accessToken?: string
  /** Header and claim members to override (undefined removes one). */
  header?: Record<string, unknown>
  claims?: Record<string, unknown>
  /** Signs with this key instead of the one whose jwk is in the header. */
  signer?: DpopKey
  /** A raw signature segment instead of a real one. */
  signature?: string
}

/** A DPoP proof (RFC 9449 §4.2) by `key`, fresh unless told otherwise. */
export function proof (key: DpopKey, options: ProofOptions): string {
  const header = strip({ typ: 'dpop+jwt', alg: key.alg, jwk: key.jwk, ...options.header })
  const claims = strip({
    jti: randomUUID(),
    htm: options.htm ?? 'GET',
    htu: options.htu,
    iat: Math.floor(Date.now() / 1000),
    ...(options.accessToken !== undefined && { ath: ath(options.accessToken) }),
    ...options.claims
  })
  const input = `${b64(header)}.${b64(claims)}`
  const signer = options.signer ?? key
  return `${input}.${options.signature ?? signJws(signer.alg, signer.privateKey, input)}`
}

/** An HS256-signed proof (a symmetric "key" in the jwk): never accepted. */
export function hmacProof (htu: string, accessToken?: string): string {
  const secret = Buffer.from('a shared secret of thirty-two bytes!')
  const header = { typ: 'dpop+jwt', alg: 'HS256', jwk: { kty: 'oct', k: secret.toString('base64url') } }
  const claims = { jti: randomUUID(), htm: 'GET', htu, iat: Math.floor(Date.now() / 1000), ...(accessToken !== undefined && { ath: ath(accessToken) }) }
  const input = `${b64(header)}.${b64(claims)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

function strip (value: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined))
}
