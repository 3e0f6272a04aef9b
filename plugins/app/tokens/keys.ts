import { createHash, createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import fp from 'fastify-plugin'
import type { Algorithm, Config } from '../../../config.js'

type HsAlgorithm = 'HS256' | 'HS384' | 'HS512'
type AsymmetricAlgorithm = 'RS256' | 'ES256' | 'EdDSA'

/** A public JWK as the JWKS publishes it: public parameters only. */
export interface PublicJwk {
  kty: 'RSA' | 'EC' | 'OKP'
  crv?: string
  n?: string
  e?: string
  x?: string
  y?: string
  kid: string
  alg: AsymmetricAlgorithm
  use: 'sig'
}

/** One key tokens may be verified with: its `kid`, its only algorithm, and what fast-jwt verifies with. */
export interface VerificationKey {
  kid: string
  alg: Algorithm
  /** A PEM public key, or the HMAC secret's bytes. */
  material: string | Buffer
  jwk?: PublicJwk
}

export interface SigningKey {
  kid: string
  alg: Algorithm
  /** A PKCS#8 PEM private key, or the HMAC secret's bytes. */
  material: string | Buffer
}

export interface EncryptionKey { kid: string, key: Buffer }

// RFC 7518 §3.2: an HMAC key at least as long as the hash output.
const secretLength: Record<HsAlgorithm, number> = { HS256: 32, HS384: 48, HS512: 64 }

const isHs = (alg: string): alg is HsAlgorithm => alg in secretLength

// RFC 7638: the SHA-256 of the key's required members, in lexicographic order, without spaces.
const thumbprintMembers: Record<string, string[]> = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], oct: ['k', 'kty'] }

export function thumbprint (jwk: Record<string, unknown>): string {
  const members = thumbprintMembers[jwk.kty as string]
  const canonical = '{' + members.map(name => `${JSON.stringify(name)}:${JSON.stringify(jwk[name])}`).join(',') + '}'
  return createHash('sha256').update(canonical).digest('base64url')
}

const secretKid = (secret: Buffer) => thumbprint({ kty: 'oct', k: secret.toString('base64url') })

/** The one algorithm a key of this type signs with, or why the key is not usable. */
function algorithmOf (key: KeyObject): AsymmetricAlgorithm | string {
  const type = key.asymmetricKeyType
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    return bits >= 2048 ? 'RS256' : `an RSA key of ${bits} bits (at least 2048 are needed)`
  }
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve
    return curve === 'prime256v1' ? 'ES256' : `an EC key on ${curve ?? 'an unknown curve'} (ES256 needs P-256)`
  }
  if (type === 'ed25519') return 'EdDSA'
  return `a key of type ${type ?? 'unknown'}`
}

const describe: Record<AsymmetricAlgorithm, string> = { RS256: 'an RSA key', ES256: 'a P-256 EC key', EdDSA: 'an Ed25519 key' }

// Platforms that cannot hold a multi-line value often pass a PEM with literal "\n".
const pemText = (value: string) => value.replace(/\\n/g, '\n').trim()

/** The value of NAME or the contents of NAME_FILE (never both). */
function valueOrFile (config: Config, name: 'JWT_PRIVATE_KEY' | 'JWT_PREVIOUS_PUBLIC_KEYS' | 'JWT_NEXT_PUBLIC_KEY'): string | undefined {
  const value = config[name]
  const file = config[`${name}_FILE`]
  if (value !== undefined && file !== undefined) throw new Error(`Set ${name} or ${name}_FILE, not both`)
  if (file === undefined) return value === undefined ? undefined : pemText(value)
  try {
    return pemText(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new Error(`${name}_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`)
  }
}

function publicJwk (key: KeyObject, kid: string, alg: AsymmetricAlgorithm): PublicJwk {
  const { kty, crv, n, e, x, y } = key.export({ format: 'jwk' })
  return { kty: kty as PublicJwk['kty'], ...(crv && { crv }), ...(n && { n, e }), ...(x && { x }), ...(y && { y }), kid, alg, use: 'sig' }
}

/** The public keys of a variable holding several PEM blocks one after another. */
function publicKeys (text: string, name: string): VerificationKey[] {
  const blocks = text.match(/-----BEGIN PUBLIC KEY-----[^-]+-----END PUBLIC KEY-----/g) ?? []
  if (blocks.length === 0 || blocks.join('').replace(/\s/g, '') !== text.replace(/\s/g, '')) {
    throw new Error(`${name} must hold PEM public keys (-----BEGIN PUBLIC KEY----- blocks) and nothing else`)
  }
  return blocks.map((pem, i) => {
    let key: KeyObject
    try {
      key = createPublicKey(pem)
    } catch {
      throw new Error(`${name}: public key ${i + 1} is not a valid PEM public key`)
    }
    const alg = algorithmOf(key)
    if (!(alg in describe)) throw new Error(`${name}: public key ${i + 1} is ${alg}; accepted are RSA (RS256), P-256 (ES256) and Ed25519 (EdDSA) keys`)
    const kid = thumbprint(key.export({ format: 'jwk' }))
    const spki = key.export({ format: 'pem', type: 'spki' }) as string
    return { kid, alg: alg as AsymmetricAlgorithm, material: spki, jwk: publicJwk(key, kid, alg as AsymmetricAlgorithm) }
  })
}

function signingKey (config: Config): { signing: SigningKey, verification: VerificationKey } {
  const alg = config.JWT_ALGORITHM
  if (isHs(alg)) {
    const secret = config.JWT_SECRET as string
    if (secret.length < secretLength[alg]) throw new Error(`JWT_SECRET must be at least ${secretLength[alg]} characters for JWT_ALGORITHM=${alg}`)
    const material = Buffer.from(secret, 'utf8')
    const kid = config.JWT_KEY_ID ?? secretKid(material)
    return { signing: { kid, alg, material }, verification: { kid, alg, material } }
  }
  const pem = valueOrFile(config, 'JWT_PRIVATE_KEY')
  if (pem === undefined) {
    throw new Error(`JWT_ALGORITHM=${alg} needs JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE (a PKCS#8 PEM; \`npm run keys:generate -- --alg ${alg}\` makes one)`)
  }
  const source = config.JWT_PRIVATE_KEY_FILE === undefined ? 'JWT_PRIVATE_KEY' : 'JWT_PRIVATE_KEY_FILE'
  if (!/^-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----$/.test(pem)) {
    throw new Error(`${source} must be a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----); \`openssl pkcs8 -topk8 -nocrypt\` converts other forms`)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch {
    throw new Error(`${source} is not a valid PEM private key`)
  }
  const found = algorithmOf(key)
  if (found !== alg) {
    const what = found in describe ? describe[found as AsymmetricAlgorithm] : found
    throw new Error(`${source} holds ${what}, but JWT_ALGORITHM=${alg} needs ${describe[alg]}`)
  }
  const publicKey = createPublicKey(key)
  const kid = config.JWT_KEY_ID ?? thumbprint(publicKey.export({ format: 'jwk' }))
  return {
    signing: { kid, alg, material: pem },
    verification: { kid, alg, material: publicKey.export({ format: 'pem', type: 'spki' }) as string, jwk: publicJwk(publicKey, kid, alg) }
  }
}

/**
 * Previous HMAC secrets, comma-separated; each may name its algorithm
 * (`HS512:…`), else it has the configured HS algorithm, or HS256 when the
 * service now signs with a key pair.
 */
function previousSecrets (config: Config): VerificationKey[] {
  if (config.JWT_PREVIOUS_SECRETS === undefined) return []
  const fallback: HsAlgorithm = isHs(config.JWT_ALGORITHM) ? config.JWT_ALGORITHM : 'HS256'
  return config.JWT_PREVIOUS_SECRETS.split(',').map((entry, i) => {
    const named = /^(HS256|HS384|HS512):(.*)$/.exec(entry)
    const alg = (named?.[1] ?? fallback) as HsAlgorithm
    const secret = named?.[2] ?? entry
    if (secret.length < secretLength[alg]) throw new Error(`JWT_PREVIOUS_SECRETS: secret ${i + 1} must be at least ${secretLength[alg]} characters for ${alg}`)
    const material = Buffer.from(secret, 'utf8')
    return { kid: secretKid(material), alg, material }
  })
}

function encryptionKeys (config: Config): { current: EncryptionKey, accepted: Map<string, Buffer> } | undefined {
  if (config.TOKEN_ENCRYPTION_KEY === undefined) {
    if (config.TOKEN_ENCRYPTION_PREVIOUS_KEYS !== undefined) throw new Error('TOKEN_ENCRYPTION_PREVIOUS_KEYS needs TOKEN_ENCRYPTION_KEY (only the current key encrypts)')
    return undefined
  }
  const toKey = (value: string): EncryptionKey => {
    const key = Buffer.from(value, 'base64url')
    return { kid: thumbprint({ kty: 'oct', k: key.toString('base64url') }), key }
  }
  const current = toKey(config.TOKEN_ENCRYPTION_KEY)
  const previous = (config.TOKEN_ENCRYPTION_PREVIOUS_KEYS?.split(',') ?? []).map(toKey)
  return { current, accepted: new Map([current, ...previous].map(k => [k.kid, k.key])) }
}

function createKeyring (config: Config) {
  const { signing, verification } = signingKey(config)
  const next = valueOrFile(config, 'JWT_NEXT_PUBLIC_KEY')
  const previous = valueOrFile(config, 'JWT_PREVIOUS_PUBLIC_KEYS')
  const nextKeys = next === undefined ? [] : publicKeys(next, 'JWT_NEXT_PUBLIC_KEY')
  if (nextKeys.length > 1) throw new Error('JWT_NEXT_PUBLIC_KEY must hold one public key')

  // Current first, then the next key (published before it signs), then the previous ones.
  const accepted = new Map<string, VerificationKey>()
  const candidates: Array<[VerificationKey, string]> = [
    [verification, 'the signing key'],
    ...nextKeys.map((k): [VerificationKey, string] => [k, 'JWT_NEXT_PUBLIC_KEY']),
    ...(previous === undefined ? [] : publicKeys(previous, 'JWT_PREVIOUS_PUBLIC_KEYS')).map((k): [VerificationKey, string] => [k, 'JWT_PREVIOUS_PUBLIC_KEYS']),
    ...previousSecrets(config).map((k): [VerificationKey, string] => [k, 'JWT_PREVIOUS_SECRETS'])
  ]
  for (const [key, source] of candidates) {
    const known = accepted.get(key.kid)
    // The same key listed twice (the signing key left among the previous ones) is harmless; two keys under one kid are not.
    if (known && (known.alg !== key.alg || !Buffer.from(known.material).equals(Buffer.from(key.material)))) {
      throw new Error(`${source}: kid ${key.kid} names two different keys (JWT_KEY_ID?)`)
    }
    if (!known) accepted.set(key.kid, key)
  }

  const jwks = { keys: [...accepted.values()].flatMap(k => k.jwk ? [k.jwk] : []) }
  const root = Buffer.from(config.APP_SECRET, 'utf8')

  return {
    signing,
    /** Every key a token may be verified with, by kid. */
    accepted: accepted as ReadonlyMap<string, VerificationKey>,
    /** Public keys only: never `d`, never a secret; `{ keys: [] }` when nothing is asymmetric. */
    jwks: () => jwks,
    /** A 32-byte key of its own per purpose, from APP_SECRET, never from the signing key. */
    derive: (purpose: string) => Buffer.from(hkdfSync('sha256', root, 'latchkey', purpose, 32)),
    encryption: encryptionKeys(config)
  }
}

export type Keyring = ReturnType<typeof createKeyring>

declare module 'fastify' {
  interface FastifyInstance {
    keys: Keyring
  }
}

export default fp(async (app) => {
  app.decorate('keys', createKeyring(app.config))
}, { name: 'keys', dependencies: ['config'] })
