// `npm run bench -- fanout` (SPEC §14): two instances, each a process of its
// own (bench/server.ts), on one PostgreSQL and Redis; a logout on A, B polled every 1 ms;
// p50/p99/max from A's 204 to B's first 401 after 20 unmeasured trials, then
// again with a B whose Redis connection is cut.
import { fork } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { Agent, request } from 'node:http'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

const trials = Number(process.env.BENCH_TRIALS ?? 200)
const { DATABASE_URL, REDIS_URL } = process.env
if (!DATABASE_URL || !REDIS_URL) throw new Error('fanout needs DATABASE_URL and REDIS_URL')
const password = 'benchmark password 1234'

// In the second run B reaches Redis through this proxy, which is then cut.
const sockets = new Set<Socket>()
const proxy = createServer(client => {
  const { hostname, port } = new URL(REDIS_URL)
  const upstream = connect(Number(port || 6379), hostname)
  sockets.add(client).add(upstream)
  // Small writes go out at once, as on a direct connection (Nagle would hold them for an ACK).
  client.setNoDelay(true)
  upstream.setNoDelay(true)
  const drop = () => { client.destroy(); upstream.destroy() }
  client.on('error', drop).on('close', drop)
  upstream.on('error', drop).on('close', drop)
  client.pipe(upstream).pipe(client)
})
await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve))

// Each instance in its own process, as deployed: one's garbage collection or
// event loop never delays the other's reply, nor the poller's.
async function instance (redis: string, prefix: string) {
  const child = fork(fileURLToPath(new URL('server.ts', import.meta.url)), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, REDIS_URL: redis, CACHE_PREFIX: prefix }
  })
  const [{ address }] = await once(child, 'message') as [{ address: string }]
  const ask = async <T>(message: object): Promise<T> => {
    child.send(message)
    return (await once(child, 'message'))[0] as T
  }
  return {
    address,
    healthy: () => ask<boolean>({ type: 'healthy' }),
    async stop () {
      child.send({ type: 'stop' })
      await once(child, 'exit')
    }
  }
}
const prefix = `latchkey-bench-${randomUUID()}:`
const a = await instance(REDIS_URL, prefix)

// node:http on kept-alive connections: a poll costs the poller a fraction of
// what fetch does, so the figures are the service's, not the client's.
const agent = new Agent({ keepAlive: true })
async function call (url: string, init: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<{ status: number, json (): unknown }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { agent, method: init.method ?? 'GET', headers: { 'content-type': 'application/json', ...init.headers } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: () => JSON.parse(Buffer.concat(chunks).toString()) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(init.body)
  })
}
const email = `fanout-${randomUUID()}@example.com`
await call(`${a.address}/auth/register`, { method: 'POST', body: JSON.stringify({ email, password }) })

async function run (b: { address: string }, count = trials): Promise<number[]> {
  const lags: number[] = []
  for (let i = 0; i < count; i++) {
    const login = (await call(`${a.address}/auth/login`, { method: 'POST', body: JSON.stringify({ email, password }) })).json() as { tokens: { accessToken: string } }
    const auth = { authorization: `Bearer ${login.tokens.accessToken}` }
    if ((await call(`${b.address}/profile`, { headers: auth })).status !== 200) throw new Error('B refused a fresh token')
    const out = await call(`${a.address}/auth/logout`, { method: 'POST', headers: auth, body: JSON.stringify({ scope: 'local' }) })
    const sent = performance.now()
    if (out.status !== 204) throw new Error(`logout: ${out.status}`)
    for (;;) {
      if ((await call(`${b.address}/profile`, { headers: auth })).status === 401) break
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
// B as deployed, straight to Redis; warmed up first (JIT, connections,
// caches), so the figures are of the steady state.
const direct = await instance(REDIS_URL, prefix)
await run(direct, 20)
const both = summary(await run(direct))
await direct.stop()
// B through the proxy, which is cut once B is warm.
const proxied = await instance(`redis://127.0.0.1:${(proxy.address() as AddressInfo).port}`, prefix)
await run(proxied, 20)
proxy.close()
for (const socket of sockets) socket.destroy()
while (await proxied.healthy()) await sleep(10)
const cut = summary(await run(proxied))
await proxied.stop()
await a.stop()

console.log(`\nfan-out, ${trials} trials each: A's logout 204 → B's first 401 (B polled every 1 ms; A, B and the poller each a process)\n`)
console.log('| path | p50 ms | p99 ms | max ms | target p99 |')
console.log('|---|---:|---:|---:|---:|')
console.log(`| Redis + PostgreSQL | ${both.p50.toFixed(1)} | ${both.p99.toFixed(1)} | ${both.max.toFixed(1)} | ≤ 10 ms ${both.p99 <= 10 ? 'met' : 'MISSED'} |`)
console.log(`| B's Redis cut: PostgreSQL notifications | ${cut.p50.toFixed(1)} | ${cut.p99.toFixed(1)} | ${cut.max.toFixed(1)} | ≤ 100 ms ${cut.p99 <= 100 ? 'met' : 'MISSED'} |`)
