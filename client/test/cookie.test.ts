import t from 'tap'
import { createLatchkey, memoryStorage, type ErrorCode, type Tokens } from '../src/index.js'
import { lastCode, startSmtp } from '../../test/helper.js'
import { cookieJar, expire, password, serve, uniqueEmail } from './helper.js'

const name = '__Host-latchkey-refresh'

t.test("transport 'cookie': the refresh token never reaches the client's storage", async t => {
  const { baseUrl, refreshes } = await serve(t, { REFRESH_COOKIE: 'on', ACCESS_TOKEN_TTL: '5s' })
  const jar = cookieJar()
  const loggedOut: ErrorCode[] = []
  const storage = memoryStorage()
  const latchkey = createLatchkey({ baseUrl, transport: 'cookie', storage, fetch: jar.fetch, onLoggedOut: code => loggedOut.push(code) })

  const { tokens } = await latchkey.register({ email: uniqueEmail(), password })
  t.equal(tokens.refreshToken, undefined, 'no refresh token in the reply')
  t.equal((await storage.get())?.refreshToken, undefined, 'nor in the storage')
  const first = jar.cookies.get(name)
  t.ok(first, 'it is the cookie')
  t.match(first?.attributes, { httponly: true, secure: true, samesite: 'Strict', path: '/' })

  await expire(tokens.accessToken)
  const profile = await latchkey.api.GET('/profile')
  t.equal(profile.response.status, 200, 'an expired access token is renewed through the cookie')
  t.same(refreshes(), [200])
  t.not(jar.cookies.get(name)?.value, first?.value, 'the cookie rotated')
  t.equal((await storage.get())?.refreshToken, undefined)

  t.test('after a reload (nothing in memory) the cookie restores the session', async t => {
    const reloaded = createLatchkey({ baseUrl, transport: 'cookie', fetch: jar.fetch })
    const again = await reloaded.api.GET('/sessions')
    t.equal(again.response.status, 200)
    t.type((await reloaded.tokens() as Tokens).accessToken, 'string')
  })

  t.test('logout clears the cookie; the next call reports logged out', async t => {
    await latchkey.logout()
    t.equal(jar.cookies.has(name), false, 'the cookie is gone')
    t.equal(await storage.get(), null)
    const after = await latchkey.api.GET('/profile')
    t.equal(after.response.status, 401)
    t.equal(after.error?.code, 'token_missing')
    t.same(loggedOut, ['validation_failed'], 'the cookie it tried is gone: logged out')
  })
})

t.test("transport 'cookie': a password change replaces the cookie", async t => {
  const smtp = await startSmtp(t)
  const { app, baseUrl } = await serve(t, { REFRESH_COOKIE: 'on', SMTP_URL: smtp.url })
  const jar = cookieJar()
  const latchkey = createLatchkey({ baseUrl, transport: 'cookie', fetch: jar.fetch })
  const email = uniqueEmail()
  await latchkey.register({ email, password })
  // A password change needs a verified email.
  await latchkey.api.POST('/auth/email/verify', { body: { email, code: await lastCode(app, smtp, email) } })
  const before = jar.cookies.get(name)?.value

  const changed = await latchkey.api.POST('/auth/password/change', { body: { currentPassword: password, newPassword: 'another long passphrase' } })
  t.equal(changed.response.status, 200)
  t.equal(changed.data?.tokens.refreshToken, undefined, 'no refresh token in the body')
  t.not(jar.cookies.get(name)?.value, before, 'the new refresh token is the cookie')
  t.equal((await latchkey.refresh()).tokenType, 'Bearer', 'and it refreshes')
})
