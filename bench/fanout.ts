// `npm run bench -- fanout` (SPEC §14): two instances (real HTTP servers, one
// process) on one PostgreSQL and Redis; a logout on A, B polled every 1 ms;
// p50/p99/max from A's 204 to B's first 401, then again with B's Redis cut.
import { randomUUID } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../app.js'

const trials = Number(process.env.BENCH_TRIALS ?? 200)
const { DATABASE_URL, REDIS_URL } = process.env
if (!DATABASE_URL || !REDIS_URL) throw new Error('fanout needs DATABASE_URL and REDIS_URL')
const password = 'benchmark password 1234'

// B reaches Redis through this proxy, which the second run cuts.
const sockets = new Set<Socket>()
const proxy = createServer(client => {
  const { hostname, port } = new URL(REDIS_URL)
  const upstream = connect(Number(port || 6379), hostname)
  sockets.add(client).add(upstream)
  const drop = () => { client.destroy(); upstream.destroy() }
  client.on('error', drop).on('close', drop)
  upstream.on('error', drop).on('close', drop)
  client.pipe(upstream).pipe(client)
})
await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve))

const env = (redis: string) => ({
  NODE_ENV: 'test',
  LOG_LEVEL: 'silent',
  RATE_LIMIT_ENABLED: 'false',
  DATABASE_URL,
  REDIS_URL: redis,
  CACHE_PREFIX: `latchkey-bench-${randomUUID()}:`,
  JWT_SECRET: 'bench-secret-bench-secret-bench-secret-00',
  APP_SECRET: 'bench-app-secret-bench-app-secret-0000',
  DATA_DIR: mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
})
const shared = env(REDIS_URL)
const a = await buildApp({ env: shared })
const b = await buildApp({ env: { ...shared, REDIS_URL: `redis://127.0.0.1:${(proxy.address() as AddressInfo).port}` } })
const baseA = await a.listen({ host: '127.0.0.1', port: 0 })
const baseB = await b.listen({ host: '127.0.0.1', port: 0 })

async function call (url: string, init: RequestInit = {}): Promise<Response> {
  return await fetch(url, { ...init, headers: { 'content-type': 'application/json', ...init.headers } })
}
const email = `fanout-${randomUUID()}@example.com`
await call(`${baseA}/auth/register`, { method: 'POST', body: JSON.stringify({ email, password }) })

async function run (): Promise<number[]> {
  const lags: number[] = []
  for (let i = 0; i < trials; i++) {
    const login = await (await call(`${baseA}/auth/login`, { method: 'POST', body: JSON.stringify({ email, password }) })).json() as { tokens: { accessToken: string } }
    const auth = { authorization: `Bearer ${login.tokens.accessToken}` }
    if ((await call(`${baseB}/profile`, { headers: auth })).status !== 200) throw new Error('B refused a fresh token')
    const out = await call(`${baseA}/auth/logout`, { method: 'POST', headers: auth, body: JSON.stringify({ scope: 'local' }) })
    const sent = performance.now()
    if (out.status !== 204) throw new Error(`logout: ${out.status}`)
    for (;;) {
      if ((await call(`${baseB}/profile`, { headers: auth })).status === 401) break
      await sleep(1)
    }
    lags.push(performance.now() - sent)
  }
  return lags
}

const summary = (lags: number[]) => {
  const sorted = [...lags].sort((x, y) => x - y)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
  return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) as number }
}
const both = summary(await run())
proxy.close()
for (const socket of sockets) socket.destroy()
while (b.cache.healthy) await sleep(10)
const cut = summary(await run())

console.log(`\nfan-out, ${trials} trials each: A's logout 204 → B's first 401 (B polled every 1 ms; both in one process)\n`)
console.log('| path | p50 ms | p99 ms | max ms | target p99 |')
console.log('|---|---:|---:|---:|---:|')
console.log(`| Redis + PostgreSQL | ${both.p50.toFixed(1)} | ${both.p99.toFixed(1)} | ${both.max.toFixed(1)} | ≤ 10 ms ${both.p99 <= 10 ? 'met' : 'MISSED'} |`)
console.log(`| B's Redis cut: PostgreSQL notifications | ${cut.p50.toFixed(1)} | ${cut.p99.toFixed(1)} | ${cut.max.toFixed(1)} | ≤ 100 ms ${cut.p99 <= 100 ? 'met' : 'MISSED'} |`)
await b.close()
await a.close()
