import t from 'tap'
import { build, register } from '../../helper.js'

const origin = 'https://app.example.com'

t.test('CORS_ORIGINS set: a preflight from an allowed origin is answered, headers right', async t => {
  const app = await build(t, { CORS_ORIGINS: `${origin},http://localhost:5173` })
  const res = await app.inject({
    method: 'OPTIONS',
    url: '/auth/login',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization, dpop, x-token-transport' }
  })
  t.equal(res.statusCode, 204, 'no longer a 404')
  t.equal(res.headers['access-control-allow-origin'], origin, 'the origin itself, never *')
  t.match(res.headers.vary, /Origin/)
  const allowed = String(res.headers['access-control-allow-headers']).toLowerCase().split(/\s*,\s*/)
  for (const header of ['authorization', 'dpop', 'x-token-transport', 'content-type']) t.ok(allowed.includes(header), `${header} allowed`)
  t.match(res.headers['access-control-allow-methods'], /POST/)
  t.equal(res.headers['access-control-max-age'], '600', 'the preflight is cached')
  t.equal(res.headers['access-control-allow-credentials'], undefined, 'no credentials while REFRESH_COOKIE=off')
})

t.test('CORS_ORIGINS set: the actual request carries the origin and exposes the headers a browser app reads', async t => {
  const app = await build(t, { CORS_ORIGINS: origin })
  const res = await app.inject({ url: '/profile', headers: { origin } })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['access-control-allow-origin'], origin)
  const exposed = String(res.headers['access-control-expose-headers']).toLowerCase().split(/\s*,\s*/)
  for (const header of ['www-authenticate', 'retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-request-id']) {
    t.ok(exposed.includes(header), `${header} exposed`)
  }
  const account = await register(app)
  const ok = await app.inject({ url: '/profile', headers: { origin, authorization: `Bearer ${account.tokens.accessToken}` } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['access-control-allow-origin'], origin)
})

t.test('a refused origin gets no allow-origin, also for a near miss', async t => {
  const app = await build(t, { CORS_ORIGINS: origin })
  for (const other of ['https://evil.example.com', 'https://app.example.com.evil.com', 'http://app.example.com']) {
    const preflight = await app.inject({ method: 'OPTIONS', url: '/auth/login', headers: { origin: other, 'access-control-request-method': 'POST' } })
    t.equal(preflight.headers['access-control-allow-origin'], undefined, `preflight from ${other}`)
    const actual = await app.inject({ url: '/health', headers: { origin: other } })
    t.equal(actual.statusCode, 200, 'the server still answers (the browser is what refuses)')
    t.equal(actual.headers['access-control-allow-origin'], undefined, `request from ${other}`)
  }
})

t.test('REFRESH_COOKIE=on allows credentials', async t => {
  const app = await build(t, { CORS_ORIGINS: origin, REFRESH_COOKIE: 'on' })
  const res = await app.inject({ method: 'OPTIONS', url: '/auth/refresh', headers: { origin, 'access-control-request-method': 'POST' } })
  t.equal(res.headers['access-control-allow-origin'], origin)
  t.equal(res.headers['access-control-allow-credentials'], 'true')
})

t.test('CORS_ORIGINS unset: no CORS header at all, the preflight is an ordinary 404', async t => {
  const app = await build(t)
  const preflight = await app.inject({ method: 'OPTIONS', url: '/auth/login', headers: { origin, 'access-control-request-method': 'POST' } })
  t.equal(preflight.statusCode, 404)
  const actual = await app.inject({ url: '/health', headers: { origin } })
  for (const res of [preflight, actual]) {
    t.same(Object.keys(res.headers).filter(h => h.startsWith('access-control-')), [], 'no access-control-* header')
  }
})
