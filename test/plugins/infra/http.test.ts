import t from 'tap'
import { build, login, password, register, uniqueEmail } from '../../helper.js'

t.test('replies that carry tokens send Cache-Control: no-store (RFC 6749 §5.1); others do not', async t => {
  const app = await build(t)
  const email = uniqueEmail('nostore')
  const registered = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password } })
  const loggedIn = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } })
  const { tokens } = loggedIn.json()
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: tokens.refreshToken } })
  const changed = await app.inject({
    method: 'POST',
    url: '/auth/password/change',
    headers: { authorization: `Bearer ${refreshed.json().tokens.accessToken}` },
    payload: { currentPassword: password, newPassword: 'staple battery horse correct' }
  })
  for (const [name, res, status] of [['register', registered, 201], ['login', loggedIn, 200], ['refresh', refreshed, 200]] as const) {
    t.equal(res.statusCode, status, `${name} answered`)
    t.equal(res.headers['cache-control'], 'no-store', `${name}: no-store`)
    t.equal(res.headers.pragma, 'no-cache', `${name}: no-cache for HTTP/1.0 caches`)
  }
  // Password change needs a verified email: its refusal is a token route's reply all the same.
  t.equal(changed.headers['cache-control'], 'no-store', 'password change: no-store')
  const failed = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'wrong password here' } })
  t.equal(failed.headers['cache-control'], 'no-store', 'a failed login too: the route is a token route')
  const health = await app.inject({ url: '/health' })
  t.equal(health.headers['cache-control'], undefined, 'a reply without tokens is left alone')
})

t.test('a request id is kept when safe, replaced when not, and echoed on every reply', async t => {
  const app = await build(t)
  const kept = await app.inject({ url: '/health', headers: { 'x-request-id': 'edge-42.a_b' } })
  t.equal(kept.headers['x-request-id'], 'edge-42.a_b')
  const longest = 'a'.repeat(64)
  t.equal((await app.inject({ url: '/health', headers: { 'x-request-id': longest } })).headers['x-request-id'], longest, '64 characters are kept')
  for (const unsafe of ['a'.repeat(65), 'has space', 'quote"d', '<script>', 'a/b', '']) {
    const res = await app.inject({ url: '/health', headers: { 'x-request-id': unsafe } })
    t.not(res.headers['x-request-id'], unsafe, `${JSON.stringify(unsafe.slice(0, 20))} is replaced`)
    t.match(res.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'by a generated one')
  }
  const none = await app.inject({ url: '/health' })
  const other = await app.inject({ url: '/health' })
  t.match(none.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'generated when none is sent')
  t.not(none.headers['x-request-id'], other.headers['x-request-id'], 'a new one per request')
  const errors = [
    await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'err-1' } }),
    await app.inject({ url: '/profile', headers: { 'x-request-id': 'err-2' } }),
    await app.inject({ method: 'POST', url: '/auth/login', headers: { 'x-request-id': 'err-3' }, payload: { email: 'x' } })
  ]
  t.same(errors.map(r => [r.statusCode, r.headers['x-request-id']]), [[404, 'err-1'], [401, 'err-2'], [400, 'err-3']], 'errors carry it too')
})

t.test('POST /auth/logout needs no body: the access token is enough', async t => {
  const app = await build(t)
  const account = await register(app)
  const tokens = await login(app, account.email)
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${tokens.accessToken}` } })
  t.equal(res.statusCode, 204)
  const after = await app.inject({ url: '/profile', headers: { authorization: `Bearer ${tokens.accessToken}` } })
  t.equal(after.json().code, 'token_revoked', 'and the logout happened (global, the default scope)')
})
