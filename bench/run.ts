// `npm run bench`: the SPEC §16 scenarios, side by side in one run, as ratios.
// The service runs compiled (`npm run build` first), in a process of its own:
// on the embedded defaults, and on PostgreSQL + Redis too when DATABASE_URL /
// REDIS_URL are set. `--json` prints the figures as JSON instead of tables.
import { execFileSync, fork } from 'node:child_process'
import { createHash, generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { buildApp } from '../app.js'
import { nodeFlags } from './node-flags.js'

if (process.argv[2] === 'fanout') {
  await import('./fanout.js')
  process.exit(0)
}

const seconds = Number(process.env.BENCH_SECONDS ?? 3)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 10)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const json = process.argv.includes('--json')
const password = 'benchmark password 1234'
const root = fileURLToPath(new URL('..', import.meta.url))
const say = (line: string) => { if (!json) console.log(line) }

const flags = nodeFlags('start:prod')

say('building dist/ (npm run build)')
execFileSync('npm', ['run', 'build'], { cwd: root, stdio: json ? 'ignore' : ['ignore', 'ignore', 'inherit'] })

interface Row {
  scenario: string
  rps: number
  p50: number
  p99: number
  baseline: string
  baselineRps: number
  ratio: number
  target: number | null
  peakRssMb: number
  note?: string
}

interface Run {
  backend: string
  idleRssMb: number
  peakRssMb: number
  rssTarget: number
  refreshStatements: number
  loadAverage: number[]
  rows: Row[]
}

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024)

async function benchBackend (backend: string, env: Record<string, string | undefined>, rssTarget: number): Promise<Run> {
  const server = fork(join(root, 'dist/bench/server.js'), { execArgv: flags, env })
  const [{ address: base }] = await once(server, 'message') as [{ address: string }]
  const ask = async <T>(message: object): Promise<T> => {
    server.send(message)
    return (await once(server, 'message'))[0] as T
  }
  const rss = () => ask<{ idleRss: number, peakRss: number }>({ type: 'rss' })
  async function argon2Rate (kind: 'hash' | 'verify'): Promise<number> {
    const child = fork(join(root, 'dist/bench/argon2.js'), [kind, String(connections), String(seconds)], { execArgv: [] })
    const [rate] = await once(child, 'message') as [number]
    await once(child, 'exit')
    return rate
  }

  async function post (path: string, body: object) {
    const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
    return res.json() as Promise<{ tokens: { accessToken: string, refreshToken: string } }>
  }

  async function load (title: string, options: Partial<autocannon.Options>) {
    const result = await autocannon({ url: base, connections, duration: seconds, ...options })
    if (result.non2xx > 0 || result.errors > 0) throw new Error(`${title}: ${result.non2xx} non-2xx replies, ${result.errors} errors`)
    const { peakRss } = await rss()
    return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, peakRssMb: mb(peakRss) }
  }
  const jsonPost = { method: 'POST' as const, headers: { 'content-type': 'application/json' } }

  // DPoP (SPEC §8.1): GET /profile with a DPoP-bound token and a fresh proof per
  // request. The proofs are signed here, on the same machine, so the ratio to
  // Bearer is a floor of what the service alone would reach.
  async function dpopProfile () {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const segment = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
    const header = segment({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicKey.export({ format: 'jwk' }) })
    const proof = (htm: string, htu: string, accessToken?: string) => {
      const ath = accessToken === undefined ? {} : { ath: createHash('sha256').update(accessToken).digest('base64url') }
      const input = `${header}.${segment({ jti: randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000), ...ath })}`
      return `${input}.${sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
    }
    const res = await fetch(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', dpop: proof('POST', `${base}/auth/login`) },
      body: JSON.stringify({ email, password })
    })
    if (!res.ok) throw new Error(`DPoP login: ${res.status} ${await res.text()}`)
    const { accessToken } = (await res.json() as { tokens: { accessToken: string } }).tokens
    return await load('profile with DPoP', {
      url: `${base}/profile`,
      requests: [{
        setupRequest: request => ({ ...request, headers: { ...request.headers, authorization: `DPoP ${accessToken}`, dpop: proof('GET', `${base}/profile`, accessToken) } })
      }]
    })
  }

  const email = `bench-${randomUUID()}@example.com`
  const { tokens } = await post('/auth/register', { email, password })
  const accounts = [email]
  for (let i = 1; i < connections; i++) {
    accounts.push(`bench-${randomUUID()}@example.com`)
    await post('/auth/register', { email: accounts[i], password })
  }
  // One session per connection, so each refreshes its own chain.
  const chains = await Promise.all(Array.from({ length: connections }, () => post('/auth/login', { email, password })))
  // The statements of one refresh, alone on the server.
  const before = await ask<number>({ type: 'statements' })
  const lone = await post('/auth/refresh', { refreshToken: chains[0].tokens.refreshToken })
  chains[0] = lone
  const refreshStatements = before < 0 ? -1 : await ask<number>({ type: 'statements' }) - before
  const { idleRss } = await rss()

  // Warmed up first (JIT, connections, caches), so the first scenario measured pays for none of it.
  for (const url of ['/bench/bare', '/bench/bare-no-headers', '/profile']) {
    await autocannon({ url: base + url, connections, duration: 1, headers: { authorization: `Bearer ${tokens.accessToken}` } })
  }
  await rss()
  // The three compared by ratio are measured in turns, `rounds` times, each
  // its best round: a burst of noise on the machine costs one round, not the ratio.
  const best = (runs: Array<Awaited<ReturnType<typeof load>>>) => runs.reduce((x, y) => y.rps > x.rps ? y : x)
  const turns: Record<'bare' | 'bareNoHeaders' | 'profile', Array<Awaited<ReturnType<typeof load>>>> = { bare: [], bareNoHeaders: [], profile: [] }
  for (let round = 0; round < rounds; round++) {
    turns.bare.push(await load('bare', { url: `${base}/bench/bare` }))
    turns.bareNoHeaders.push(await load('bare without security headers', { url: `${base}/bench/bare-no-headers` }))
    turns.profile.push(await load('profile', { url: `${base}/profile`, headers: { authorization: `Bearer ${tokens.accessToken}` } }))
  }
  const [bare, bareNoHeaders, profile] = [best(turns.bare), best(turns.bareNoHeaders), best(turns.profile)]
  const dpop = await dpopProfile()
  const argon2Verify = await argon2Rate('verify')
  // As many accounts as connections, taken in turn: a login flood is many
  // people, so the logins of one account seldom queue on its row.
  let turn = 0
  const login = await load('login', {
    url: `${base}/auth/login`,
    ...jsonPost,
    requests: [{ setupRequest: (request) => ({ ...request, body: JSON.stringify({ email: accounts[turn++ % accounts.length], password }) }) }]
  })
  let next = 0
  const refresh = await load('refresh', {
    url: `${base}/auth/refresh`,
    ...jsonPost,
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
  const argon2Hash = await argon2Rate('hash')
  await ask({ type: 'codes' })
  const register = await load('register', {
    url: `${base}/auth/register`,
    ...jsonPost,
    requests: [{ setupRequest: (request) => ({ ...request, body: JSON.stringify({ email: `bench-${randomUUID()}@example.com`, password }) }) }]
  })
  // Each account register made is confirmed once, with the code it was mailed.
  const codes = await ask<Array<{ email: string, code: string }>>({ type: 'codes' })
  let used = 0
  const verifyStarted = performance.now()
  const verified = await autocannon({
    url: `${base}/auth/email/verify`,
    connections: Math.min(connections, codes.length),
    amount: codes.length,
    ...jsonPost,
    requests: [{ setupRequest: (request) => ({ ...request, body: JSON.stringify(codes[used++ % codes.length]) }) }]
  })
  if (verified.non2xx > 0 || verified.errors > 0) throw new Error(`verify: ${verified.non2xx} non-2xx replies, ${verified.errors} errors`)
  const verify = { rps: codes.length / ((performance.now() - verifyStarted) / 1000), p50: verified.latency.p50, p99: verified.latency.p99, peakRssMb: mb((await rss()).peakRss) }

  server.send({ type: 'stop' })
  await once(server, 'exit')

  const row = (scenario: string, m: typeof bare, baseline: string, baselineRps: number, target: number | null, note?: string): Row =>
    ({ scenario, ...m, baseline, baselineRps, ratio: m.rps / baselineRps, target, ...(note !== undefined && { note }) })
  const rows = [
    row('GET /profile (full authentication)', profile, 'bare JSON route, same hooks', bare.rps, 0.85),
    row('GET /profile', profile, 'bare route without the security-header hook', bareNoHeaders.rps, null),
    row('GET /profile with DPoP (a proof per request)', dpop, 'GET /profile with Bearer', profile.rps, null, 'proofs signed by the bench on the same cores'),
    row('bare route', bare, 'bare route without the security-header hook', bareNoHeaders.rps, null, 'the cost of the security-header hook'),
    row('POST /auth/login', login, `raw argon2id verify, ${connections} in flight`, argon2Verify, 0.9),
    row('POST /auth/refresh (rotation + blacklist)', refresh, 'GET /profile', profile.rps, null, refreshStatements < 0 ? 'statements counted on PostgreSQL' : `${refreshStatements} SQL statements (BEGIN … COMMIT), one transaction`),
    row('POST /auth/register', register, `raw argon2id hash, ${connections} in flight`, argon2Hash, null),
    row('POST /auth/email/verify', verify, 'bare JSON route, same hooks', bare.rps, null, `${codes.length} codes, each used once`)
  ]
  const peakRssMb = Math.max(...rows.map(r => r.peakRssMb))
  return { backend, idleRssMb: mb(idleRss), peakRssMb, rssTarget, refreshStatements, loadAverage: loadavg().map(l => Math.round(l * 100) / 100), rows }
}

const embeddedEnv = { ...process.env, DATABASE_URL: undefined, REDIS_URL: undefined }
const runs = [await benchBackend('PGlite + in-process cache', embeddedEnv, 350)]
if (process.env.DATABASE_URL || process.env.REDIS_URL) {
  runs.push(await benchBackend(`${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'} + ${process.env.REDIS_URL ? 'Redis' : 'in-process cache'}`, process.env, 200))
}

const fixed = (n: number, digits = 0) => n.toFixed(digits)
for (const run of runs) {
  say(`\n${run.backend}, compiled (node ${flags.join(' ')}, as start:prod): ${seconds}s per scenario (the bare routes and GET /profile: best of ${rounds} rounds in turn), ${connections} connections, rate limiter as deployed with its limits raised; load average ${run.loadAverage.join(' ')}\n`)
  say('| scenario | req/s | p50 ms | p99 ms | baseline | req/s | ratio | target | peak RSS MB | note |')
  say('|---|---:|---:|---:|---|---:|---:|---:|---:|---|')
  for (const r of run.rows) {
    const verdict = r.target === null ? '—' : `≥ ${r.target} ${r.ratio >= r.target ? 'met' : 'MISSED'}`
    say(`| ${r.scenario} | ${fixed(r.rps)} | ${r.p50} | ${r.p99} | ${r.baseline} | ${fixed(r.baselineRps)} | ${fixed(r.ratio, 2)} | ${verdict} | ${r.peakRssMb} | ${r.note ?? ''} |`)
  }
  say(`| resident memory, idle / peak under load | | | | | | | ≤ ${run.rssTarget} MB ${run.peakRssMb <= run.rssTarget ? 'met' : 'MISSED'} | ${run.idleRssMb} / ${run.peakRssMb} | |`)
}

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

const profileRps = runs[0].rows[0].rps
// A GET /profile takes 1/rate of the process's time; a first verification adds its cost to that.
const perProfile = 1000 / profileRps
const hs = costs[0]
say(`\nAccess tokens, ${tokenCount} per algorithm: signing, and the first verification of each (later ones come from the cache of verified tokens)\n`)
say('| algorithm | sign µs | verify µs | verify ÷ HS256 | GET /profile with a first verification, × HS256 |')
say('|---|---:|---:|---:|---:|')
for (const { name, sign, verify } of costs) {
  const profileRatio = (perProfile + hs.verify) / (perProfile + verify)
  say(`| ${name} | ${(sign * 1000).toFixed(1)} | ${(verify * 1000).toFixed(1)} | ${(verify / hs.verify).toFixed(2)} | ${profileRatio.toFixed(2)} |`)
}

if (json) console.log(JSON.stringify({ date: new Date().toISOString(), nodeFlags: flags, seconds, connections, runs, tokens: costs }, null, 2))
