// `npm run keys:generate -- --alg ES256|RS256|EdDSA [--out key.pem]`: a new
// signing key as PKCS#8 PEM, its public key and the kid latchkey will give it.
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { thumbprint } from '../plugins/app/tokens/keys.js'

const generators = {
  // 2048 bits: the smallest size accepted (NIST SP 800-57 to 2030), and the cheapest to verify.
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  EdDSA: () => generateKeyPairSync('ed25519')
}

const { values } = parseArgs({ options: { alg: { type: 'string' }, out: { type: 'string' } } })
const alg = values.alg as keyof typeof generators | undefined
if (alg === undefined || !(alg in generators)) {
  console.error('usage: npm run keys:generate -- --alg ES256|RS256|EdDSA [--out key.pem]')
  process.exit(2)
}

const { privateKey } = generators[alg]()
const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
const publicKey = createPublicKey(privateKey)
const publicPem = publicKey.export({ format: 'pem', type: 'spki' }) as string
const kid = thumbprint(publicKey.export({ format: 'jwk' }))

if (values.out !== undefined) {
  writeFileSync(values.out, privatePem, { mode: 0o600, flag: 'wx' })
  writeFileSync(`${values.out}.pub`, publicPem, { flag: 'wx' })
  console.log(`kid: ${kid}\nprivate key (JWT_PRIVATE_KEY_FILE): ${values.out}\npublic key (JWT_NEXT_PUBLIC_KEY_FILE, later JWT_PREVIOUS_PUBLIC_KEYS_FILE): ${values.out}.pub`)
} else {
  console.log(`# kid: ${kid} (JWT_ALGORITHM=${alg})\n# private key, for JWT_PRIVATE_KEY:\n${privatePem}# public key, for JWT_NEXT_PUBLIC_KEY and later JWT_PREVIOUS_PUBLIC_KEYS:\n${publicPem}`)
}
