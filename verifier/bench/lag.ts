// `npm run bench --workspace verifier`: how long a logout takes to reach a
// service that verifies tokens itself (SPEC §14.1) — from latchkey's 204 to the
// verifier's first `token_revoked`, polled every millisecond, over TRIALS
// logouts. Real backends when DATABASE_URL / REDIS_URL are set, else embedded.
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../app.js'
import { createVerifier, isVerifierError } from '../src/index.js'

const trials = Number(process.env.TRIALS ?? 200)
const feedToken = 'bench-feed-token-bench-feed-token'
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })

const app = await buildApp({
  env: {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATA_DIR: mkdtempSync(join(tmpdir(), 'latchkey-bench-')),
    APP_SECRET: 'bench-app-secret-bench-app-secret-0000',
    JWT_ALGORITHM: 'ES256',
    JWT_PRIVATE_KEY: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    REVOCATION_FEED_TOKEN: feedToken,
    RATE_LIMIT_ENABLED: 'false',
    CACHE_PREFIX: `latchkey-bench-${randomUUID()}:`,
    ...(process.env.DATABASE_URL && { DATABASE_URL: process.env.DATABASE_URL }),
    ...(process.env.REDIS_URL && { REDIS_URL: process.env.REDIS_URL })
  }
})
await app.listen({ host: '127.0.0.1', port: 0 })
const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
const verifier = createVerifier({
  issuer: 'latchkey',
  audience: 'latchkey',
  jwksUrl: `${base}/.well-known/jwks.json`,
  feedUrl: `${base}/revocations/stream`,
  feedToken
})
await verifier.ready()

const post = (path: string, body: object, token?: string) => fetch(`${base}${path}`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(token && { authorization: `Bearer ${token}` }) },
  body: JSON.stringify(body)
})
const credentials = { email: `bench-${randomUUID()}@example.com`, password: 'correct horse battery staple' }
if ((await post('/auth/register', credentials)).status !== 201) throw new Error('register failed')

const revoked = async (token: string) => await verifier.verify(token).then(() => false, err => {
  if (isVerifierError(err) && err.code === 'token_revoked') return true
  throw err
})

const delays: number[] = []
for (let i = 0; i < trials; i++) {
  const { tokens } = await (await post('/auth/login', credentials)).json() as { tokens: { accessToken: string } }
  if (await revoked(tokens.accessToken)) throw new Error('a fresh token was refused')
  const response = await post('/auth/logout', { scope: 'local' }, tokens.accessToken)
  const loggedOut = performance.now()
  if (response.status !== 204) throw new Error(`logout: ${response.status}`)
  while (!await revoked(tokens.accessToken)) await sleep(1)
  delays.push(performance.now() - loggedOut)
}

await verifier.close()
await app.close()

delays.sort((a, b) => a - b)
const at = (q: number) => delays[Math.min(delays.length - 1, Math.ceil(q * delays.length) - 1)].toFixed(2)
console.log(`logout → verifier rejection, ${trials} trials, ${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'} + ${process.env.REDIS_URL ? 'Redis' : 'in-process cache'}`)
console.log(`p50 ${at(0.5)} ms   p99 ${at(0.99)} ms   max ${at(1)} ms   (target p99 ≤ 100 ms)`)
