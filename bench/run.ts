// `npm run bench`: the SPEC §16 scenarios, side by side in one run, as ratios.
// Uses the real backends when DATABASE_URL / REDIS_URL are set, else the embedded ones.
import { fork } from 'node:child_process'
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { hash, verify } from '@node-rs/argon2'
import { buildApp } from '../app.js'

if (process.argv[2] === 'fanout') {
  await import('./fanout.js')
  process.exit(0)
}

const seconds = Number(process.env.BENCH_SECONDS ?? 5)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 10)
const password = 'benchmark password 1234'

const server = fork(new URL('./server.ts', import.meta.url), { execArgv: ['--import', 'tsx'] })
const [{ address: base }] = await once(server, 'message') as [{ address: string }]
const ask = async <T>(message: string): Promise<T> => {
  server.send(message)
  return (await once(server, 'message'))[0] as T
}

async function post (path: string, body: object) {
  const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
  return res.json() as Promise<{ tokens: { accessToken: string, refreshToken: string } }>
}

async function load (title: string, options: Partial<autocannon.Options>): Promise<number> {
  const result = await autocannon({ url: base, connections, duration: seconds, ...options })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${title}: ${result.non2xx} non-2xx replies, ${result.errors} errors`)
  return result.requests.average
}

// The raw argon2id rate with the parameters login uses, with as many in flight as autocannon keeps.
async function argon2Rate (): Promise<number> {
  const stored = await hash(password, { algorithm: 2 })
  let done = 0
  const end = performance.now() + seconds * 1000
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < end) {
      await verify(stored, password)
      done++
    }
  }))
  return done / seconds
}

const email = `bench-${Date.now()}@example.com`
const { tokens } = await post('/auth/register', { email, password })
// One session per connection, so each refreshes its own chain.
const chains = await Promise.all(Array.from({ length: connections }, () => post('/auth/login', { email, password })))

const bare = await load('bare', { url: `${base}/bench/bare` })
const profile = await load('profile', { url: `${base}/profile`, headers: { authorization: `Bearer ${tokens.accessToken}` } })
const argon2 = await argon2Rate()
const login = await load('login', {
  url: `${base}/auth/login`,
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email, password })
})
let next = 0
const refresh = await load('refresh', {
  url: `${base}/auth/refresh`,
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  requests: [{
    setupRequest: (request, context: { token?: string }) => {
      context.token ??= chains[next++ % chains.length].tokens.refreshToken
      return { ...request, body: JSON.stringify({ refreshToken: context.token }) }
    },
    onResponse: (_status, body, context: { token?: string }) => {
      context.token = JSON.parse(body).tokens.refreshToken
    }
  }]
})
const { peakRss } = await ask<{ peakRss: number }>('rss')
server.send('stop')
await once(server, 'exit')

// What signing and a first (uncached) verification of an access token cost per
// algorithm, through the tokens service itself; the service is idle by now.
const pem = (pair: { privateKey: { export (o: object): string | Buffer } }) => pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
const algorithms: Array<[string, Record<string, string>]> = [
  ['HS256', {}],
  ['HS256 + JWE', { TOKEN_ENCRYPTION_KEY: randomBytes(32).toString('base64url') }],
  ['RS256', { JWT_ALGORITHM: 'RS256', JWT_PRIVATE_KEY: pem(generateKeyPairSync('rsa', { modulusLength: 2048 })) }],
  ['ES256', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: pem(generateKeyPairSync('ec', { namedCurve: 'P-256' })) }],
  ['EdDSA', { JWT_ALGORITHM: 'EdDSA', JWT_PRIVATE_KEY: pem(generateKeyPairSync('ed25519')) }]
]
const tokenCount = Number(process.env.BENCH_TOKENS ?? 2000)
const costs: Array<{ name: string, sign: number, verify: number }> = []
for (const [name, env] of algorithms) {
  const app = await buildApp({
    env: { NODE_ENV: 'test', LOG_LEVEL: 'silent', MIGRATE_ON_START: 'false', DATA_DIR: mkdtempSync(join(tmpdir(), 'latchkey-bench-')), JWT_SECRET: 'bench-secret-bench-secret-bench-secret-00', APP_SECRET: 'bench-app-secret-bench-app-secret-0000', ...env }
  })
  await app.ready()
  const who = { id: randomUUID(), role: 'user' as const, emailVerified: true, tokenVersion: 0 }
  const sid = { id: randomUUID(), endsAt: Date.now() + 86_400_000, bnd: {} }
  // Warmed up first, so the first algorithm does not pay for the JIT of all.
  for (let i = 0; i < 200; i++) app.tokens.verify(app.tokens.pair(who, sid).accessToken, 'access')
  let began = performance.now()
  const signed = Array.from({ length: tokenCount }, () => app.tokens.pair(who, sid).accessToken)
  const sign = (performance.now() - began) / tokenCount
  // Every token is new to the verifier, so none is answered from its cache.
  began = performance.now()
  for (const token of signed) app.tokens.verify(token, 'access')
  costs.push({ name, sign, verify: (performance.now() - began) / tokenCount })
  await app.close()
}

const rows = [
  ['GET /profile (full authentication)', profile, 'bare JSON route', bare, 0.85],
  ['POST /auth/login', login, 'raw argon2id verify', argon2, 0.9],
  ['POST /auth/refresh (rotation + blacklist)', refresh, 'GET /profile', profile, null]
] as const
console.log(`\n${seconds}s per scenario, ${connections} connections, ${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'} + ${process.env.REDIS_URL ? 'Redis' : 'in-process cache'}\n`)
console.log('| scenario | req/s | baseline | req/s | ratio | target |')
console.log('|---|---:|---|---:|---:|---:|')
for (const [name, rate, baseName, baseRate, target] of rows) {
  const ratio = rate / baseRate
  const verdict = target === null ? '—' : `≥ ${target} ${ratio >= target ? 'met' : 'MISSED'}`
  console.log(`| ${name} | ${rate.toFixed(0)} | ${baseName} | ${baseRate.toFixed(0)} | ${ratio.toFixed(2)} | ${verdict} |`)
}
const rssMb = peakRss / 1024 / 1024
console.log(`| peak resident memory of the service under load | ${rssMb.toFixed(0)} MB | | | | ≤ 200 MB ${rssMb <= 200 ? 'met' : 'MISSED'} |`)

// A GET /profile takes 1/rate of the process's time; a first verification adds its cost to that.
const perProfile = 1000 / profile
const hs = costs[0]
console.log(`\nAccess tokens, ${tokenCount} per algorithm: signing, and the first verification of each (later ones come from the verifier's cache)\n`)
console.log('| algorithm | sign µs | verify µs | verify ÷ HS256 | GET /profile with a first verification, × HS256 |')
console.log('|---|---:|---:|---:|---:|')
for (const { name, sign, verify } of costs) {
  const profileRatio = (perProfile + hs.verify) / (perProfile + verify)
  console.log(`| ${name} | ${(sign * 1000).toFixed(1)} | ${(verify * 1000).toFixed(1)} | ${(verify / hs.verify).toFixed(2)} | ${profileRatio.toFixed(2)} |`)
}
