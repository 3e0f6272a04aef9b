import type { AddressInfo } from 'node:net'
import t from 'tap'
import { build, freePort, password, register } from '../../helper.js'

/** One sample's value from Prometheus text, 0 when absent. */
function sample (text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const have = (match[2] ?? '').split(',')
    if (wanted.every(l => have.includes(l))) return Number(match[3])
  }
  return 0
}

t.test('/metrics on METRICS_PORT: auth outcomes, durations by route template, state lookups, process defaults', async t => {
  const metricsPort = await freePort()
  const app = await build(t, { METRICS_PORT: String(metricsPort) })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const api = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const scrape = async () => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    return await res.text()
  }
  t.same(app.metrics.address(), { address: '127.0.0.1', family: 'IPv4', port: metricsPort })

  const before = await scrape()
  const account = await register(app)
  const post = (url: string, body: object, headers: Record<string, string> = {}) =>
    fetch(`${api}${url}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const loggedIn = await post('/auth/login', { email: account.email, password })
  t.equal(loggedIn.status, 200)
  const { tokens } = await loggedIn.json() as { tokens: { accessToken: string, refreshToken: string } }
  t.equal((await post('/auth/login', { email: account.email, password: 'not the password' })).status, 401)
  const refreshed = await post('/auth/refresh', { refreshToken: tokens.refreshToken })
  t.equal(refreshed.status, 200)
  t.equal((await post('/auth/refresh', { refreshToken: 'not-a-token' })).status, 400)
  t.equal((await fetch(`${api}/profile`, { headers: { authorization: `Bearer ${tokens.accessToken}` } })).status, 200)
  t.equal((await post('/auth/email/verify', { email: account.email, code: '000000' })).status, 400)
  t.equal((await post('/auth/logout', { scope: 'local' }, { authorization: `Bearer ${tokens.accessToken}` })).status, 204)
  const after = await scrape()

  const moved = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels)
  t.equal(moved('latchkey_logins_total', { outcome: 'success' }), 1, 'a successful login')
  t.equal(moved('latchkey_logins_total', { outcome: 'invalid_credentials' }), 1, 'a failed login, by its code')
  t.equal(moved('latchkey_refreshes_total', { outcome: 'success' }), 1, 'a refresh')
  t.equal(moved('latchkey_refreshes_total', { outcome: 'token_invalid' }), 1, 'a refused refresh, by its code')
  t.equal(moved('latchkey_code_checks_total', { purpose: 'verify_email', outcome: 'otp_invalid' }), 1, 'a wrong code')
  t.equal(moved('latchkey_logouts_total', { scope: 'local' }), 1, 'a logout, by scope')
  t.equal(moved('latchkey_http_request_duration_seconds_count', { method: 'POST', route: '/auth/login', status_code: '401' }), 1,
    'request durations by route template and status')
  t.ok(moved('latchkey_state_lookups_total', { tier: 'database' }) + moved('latchkey_state_lookups_total', { tier: 'in_process' }) >= 2,
    'state lookups by tier (the profile request read user and session)')
  t.match(after, /^process_resident_memory_bytes \d+/m, 'the process defaults')
  t.match(after, /^nodejs_eventloop_lag_seconds /m)
  t.notMatch(after, new RegExp(account.id), 'no ids in any label')

  const onApi = await fetch(`${api}/metrics`)
  t.equal(onApi.status, 404, 'never on the API port')
  t.equal((await onApi.json() as { code: string }).code, 'not_found')
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/other`)).status, 404, 'the metrics port serves /metrics only')
})

t.test('reuse detection is counted', async t => {
  const metricsPort = await freePort()
  const app = await build(t, { METRICS_PORT: String(metricsPort), REFRESH_REUSE_INTERVAL: '0' })
  await app.ready()
  const account = await register(app)
  const refresh = (refreshToken?: string) => app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
  t.equal((await refresh(account.tokens.refreshToken)).statusCode, 200)
  t.equal((await refresh(account.tokens.refreshToken)).json().code, 'refresh_reused')
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.equal(sample(text, 'latchkey_refresh_reuse_detected_total'), 1)
  t.equal(sample(text, 'latchkey_refreshes_total', { outcome: 'refresh_reused' }), 1)
})

t.test('without METRICS_PORT nothing listens and nothing is measured', async t => {
  const app = await build(t)
  await app.ready()
  t.equal(app.metrics.address(), null)
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 404)
})

t.test('the metrics listener closes with the app', async t => {
  const metricsPort = await freePort()
  const app = await build(t, { METRICS_PORT: String(metricsPort) })
  await app.ready()
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200)
  await app.close()
  await t.rejects(fetch(`http://127.0.0.1:${metricsPort}/metrics`), 'nothing listens after close')
})
