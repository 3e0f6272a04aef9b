import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { build, password, uniqueEmail, type Env } from '../../../helper.js'

// SPEC §6.1 over real HTTP: node's fetch, with the Cookie header sent by hand
// as a browser would (browsers keep Secure cookies of 127.0.0.1 over plain HTTP).
const name = '__Host-latchkey-refresh'
const cookieMode = { 'x-token-transport': 'cookie' }

async function serve (t: Parameters<typeof build>[0], env: Env = {}) {
  const app = await build(t, { REFRESH_COOKIE: 'on', ...env })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  async function post (path: string, body: object | undefined, headers: Record<string, string> = {}) {
    const response = await fetch(base + path, {
      method: 'POST',
      headers: { ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await response.text()
    return { status: response.status, body: text === '' ? undefined : JSON.parse(text), setCookies: response.headers.getSetCookie() }
  }
  post.get = async (path: string, headers: Record<string, string>) => (await fetch(base + path, { headers })).status
  return post
}

/** The refresh cookie a reply set: its value and attributes, or undefined. */
function refreshCookie (setCookies: string[]) {
  const header = setCookies.find(h => h.startsWith(`${name}=`))
  if (header === undefined) return undefined
  const [pair, ...rest] = header.split(';').map(p => p.trim())
  const attributes = Object.fromEntries(rest.map(a => {
    const [key, value] = a.split('=')
    return [key.toLowerCase(), value ?? true]
  }))
  return { value: pair.slice(name.length + 1), attributes }
}

const cookieHeader = (value: string) => ({ cookie: `${name}=${value}` })

t.test('login with the header: the refresh token is the cookie, never in the body', async t => {
  const post = await serve(t)
  const email = uniqueEmail()
  t.equal((await post('/auth/register', { email, password })).status, 201)

  const login = await post('/auth/login', { email, password }, cookieMode)
  t.equal(login.status, 200)
  t.type(login.body.tokens.accessToken, 'string', 'the access token stays in the body')
  t.notOk('refreshToken' in login.body.tokens, 'the body has no refresh token')
  const cookie = refreshCookie(login.setCookies)
  t.ok(cookie, 'the cookie is set')
  t.match(cookie?.value, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'holding a JWT')
  t.same({ ...cookie?.attributes, 'max-age': undefined }, { httponly: true, secure: true, samesite: 'Strict', path: '/', 'max-age': undefined },
    'HttpOnly, Secure, SameSite=Strict, Path=/ and nothing else (no Domain: a __Host- cookie)')
  const maxAge = Number(cookie?.attributes['max-age'])
  t.ok(maxAge > 86390 && maxAge <= 86400, `Max-Age is the refresh token's remaining lifetime (${maxAge})`)
  t.equal(maxAge, login.body.tokens.refreshExpiresIn)
})

t.test('register with the header sets the cookie too', async t => {
  const post = await serve(t)
  const register = await post('/auth/register', { email: uniqueEmail(), password }, cookieMode)
  t.equal(register.status, 201)
  t.notOk('refreshToken' in register.body.tokens)
  t.ok(refreshCookie(register.setCookies))
})

t.test('refresh with the cookie rotates it; a replayed old cookie is theft', async t => {
  const post = await serve(t, { REFRESH_REUSE_INTERVAL: '0' })
  const first = refreshCookie((await post('/auth/register', { email: uniqueEmail(), password }, cookieMode)).setCookies)?.value as string

  const refreshed = await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(first) })
  t.equal(refreshed.status, 200)
  t.notOk('refreshToken' in refreshed.body.tokens, 'no refresh token in the body')
  const second = refreshCookie(refreshed.setCookies)
  t.ok(second, 'a new cookie')
  t.not(second?.value, first, 'rotated')
  t.equal(second?.attributes.httponly, true)

  await sleep(5)
  const replay = await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(first) })
  t.equal(replay.status, 400)
  t.equal(replay.body.code, 'refresh_reused')
  const cleared = refreshCookie(replay.setCookies)
  t.equal(cleared?.value, '', 'the refused cookie is cleared')
  t.equal(cleared?.attributes['max-age'], '0')
  t.equal(cleared?.attributes.secure, true, 'with the attributes a browser needs to accept the clearing of a __Host- cookie')
  t.equal(cleared?.attributes.path, '/')

  const successor = await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(second?.value as string) })
  t.equal(successor.status, 400, 'the whole session died, the rotated cookie too')
  t.equal(successor.body.code, 'token_revoked')
})

t.test('a cookie without X-Token-Transport is refused and left in place', async t => {
  const post = await serve(t)
  const cookie = refreshCookie((await post('/auth/register', { email: uniqueEmail(), password }, cookieMode)).setCookies)?.value as string

  const refresh = await post('/auth/refresh', {}, cookieHeader(cookie))
  t.equal(refresh.status, 400)
  t.equal(refresh.body.code, 'validation_failed')
  t.match(refresh.body.message, /X-Token-Transport/)
  t.same(refresh.setCookies, [], 'not cleared: a cross-site request must not log the user out either')

  const logout = await post('/auth/logout', undefined, cookieHeader(cookie))
  t.equal(logout.status, 401)
  t.equal(logout.body.code, 'token_missing')

  t.equal((await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(cookie) })).status, 200, 'the session is intact')
})

t.test('an unknown transport is refused', async t => {
  const post = await serve(t)
  const res = await post('/auth/login', { email: uniqueEmail(), password }, { 'x-token-transport': 'smoke-signals' })
  t.equal(res.status, 400)
  t.equal(res.body.code, 'validation_failed')
})

t.test('refresh with the header and neither cookie nor body token', async t => {
  const post = await serve(t)
  const res = await post('/auth/refresh', {}, cookieMode)
  t.equal(res.status, 400)
  t.equal(res.body.code, 'validation_failed')
  t.same(res.setCookies, [])
})

t.test('a body token wins over the cookie, and its reply still moves the new token into the cookie', async t => {
  const post = await serve(t)
  const registered = await post('/auth/register', { email: uniqueEmail(), password })
  t.type(registered.body.tokens.refreshToken, 'string', 'without the header: the body, as always')
  t.same(registered.setCookies.filter(h => h.startsWith(name)), [])
  const res = await post('/auth/refresh', { refreshToken: registered.body.tokens.refreshToken }, { ...cookieMode, ...cookieHeader('garbage') })
  t.equal(res.status, 200)
  t.ok(refreshCookie(res.setCookies)?.value)
})

t.test('logout by the cookie clears it and ends the session', async t => {
  const post = await serve(t)
  const registered = await post('/auth/register', { email: uniqueEmail(), password }, cookieMode)
  const cookie = refreshCookie(registered.setCookies)?.value as string

  const logout = await post('/auth/logout', { scope: 'local' }, { ...cookieMode, ...cookieHeader(cookie) })
  t.equal(logout.status, 204)
  const cleared = refreshCookie(logout.setCookies)
  t.equal(cleared?.value, '')
  t.equal(cleared?.attributes['max-age'], '0')
  const after = await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(cookie) })
  t.equal(after.status, 400, 'the cookie no longer refreshes')
  t.equal(after.body.code, 'token_revoked')
  t.equal(refreshCookie(after.setCookies)?.attributes['max-age'], '0', 'and a browser still holding it is told to drop it')
  const access = await post.get('/profile', { authorization: `Bearer ${registered.body.tokens.accessToken}` })
  t.equal(access, 401, 'the access token died with the session')
})

t.test('logout by the access token in cookie transport clears the cookie; scope `others` keeps it', async t => {
  const post = await serve(t)
  const registered = await post('/auth/register', { email: uniqueEmail(), password }, cookieMode)
  const bearer = { authorization: `Bearer ${registered.body.tokens.accessToken}` }

  const others = await post('/auth/logout', { scope: 'others' }, { ...cookieMode, ...bearer })
  t.equal(others.status, 204)
  t.same(others.setCookies, [], 'this session goes on: its cookie stays')

  const local = await post('/auth/logout', { scope: 'local' }, { ...cookieMode, ...bearer })
  t.equal(local.status, 204)
  t.equal(refreshCookie(local.setCookies)?.attributes['max-age'], '0')
})

t.test('with REFRESH_COOKIE=off the header changes nothing', async t => {
  const post = await serve(t, { REFRESH_COOKIE: 'off' })
  const email = uniqueEmail()
  const registered = await post('/auth/register', { email, password }, cookieMode)
  t.type(registered.body.tokens.refreshToken, 'string', 'the refresh token is in the body')
  t.same(registered.setCookies, [], 'and no cookie is set')

  const login = await post('/auth/login', { email, password }, cookieMode)
  t.type(login.body.tokens.refreshToken, 'string')
  t.same(login.setCookies, [])

  const byCookie = await post('/auth/refresh', {}, { ...cookieMode, ...cookieHeader(login.body.tokens.refreshToken) })
  t.equal(byCookie.status, 400, 'a cookie is never read')
  t.equal(byCookie.body.code, 'validation_failed')
  const logout = await post('/auth/logout', undefined, { ...cookieMode, ...cookieHeader(login.body.tokens.refreshToken) })
  t.equal(logout.status, 401)
  t.equal(logout.body.code, 'token_missing')

  const byBody = await post('/auth/refresh', { refreshToken: login.body.tokens.refreshToken }, cookieMode)
  t.equal(byBody.status, 200)
  t.type(byBody.body.tokens.refreshToken, 'string')
  t.same(byBody.setCookies, [])
})
