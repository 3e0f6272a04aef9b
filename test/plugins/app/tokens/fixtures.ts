// Keys and checks shared by the key tests, built with node:crypto only, never with the code under test.
import { createPublicKey, generateKeyPairSync, randomBytes, verify as cryptoVerify, type JsonWebKey } from 'node:crypto'
import { authed, type App, type Env } from '../../../helper.js'

export type Json = Record<string, any>
export const part = (token: string, index: number): Json => JSON.parse(Buffer.from(token.split('.')[index], 'base64url').toString('utf8'))

export function pair (alg: 'RS256' | 'ES256' | 'EdDSA') {
  const { privateKey, publicKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')
  return {
    alg,
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }) as string
  }
}

/** The environment of an instance signing with the key pair, and no HMAC secret. */
export const asymmetric = (key: ReturnType<typeof pair>): Env => ({ JWT_ALGORITHM: key.alg, JWT_PRIVATE_KEY: key.privatePem, JWT_SECRET: undefined })
export const encryptionKey = () => randomBytes(32).toString('base64url')

export async function jwks (app: App): Promise<Json[]> {
  const res = await app.inject({ url: '/.well-known/jwks.json' })
  if (res.statusCode !== 200) throw new Error(`jwks: ${res.statusCode}`)
  return res.json().keys
}

/** What another service does with a JWKS it fetched: plain node:crypto, no latchkey code. */
export function verifiedByJwks (token: string, keys: Json[]): boolean {
  const [h, p, s] = token.split('.')
  const header = part(token, 0)
  const jwk = keys.find(k => k.kid === header.kid)
  if (!jwk || jwk.alg !== header.alg) return false
  const { kty, crv, n, e, x, y } = jwk
  const key = createPublicKey({ key: { kty, crv, n, e, x, y } as JsonWebKey, format: 'jwk' })
  const data = Buffer.from(`${h}.${p}`)
  const signature = Buffer.from(s, 'base64url')
  if (jwk.alg === 'RS256') return cryptoVerify('sha256', data, key, signature)
  if (jwk.alg === 'ES256') return cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
  return cryptoVerify(null, data, key, signature)
}

export const profile = (app: App, token: string) => authed(app, token, { url: '/profile' })

export async function login (app: App, email: string): Promise<{ accessToken: string, refreshToken: string }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'correct horse battery staple' } })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return res.json().tokens
}
