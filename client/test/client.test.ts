import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createLatchkey, isLatchkeyError, LatchkeyError, localStorageTokens, memoryStorage, type ErrorCode, type Tokens } from '../src/index.js'
import { lastCode, startSmtp } from '../../test/helper.js'
import { claims, expire, password, serve, uniqueEmail } from './helper.js'

// Long enough that a refreshed token outlives its retry on a loaded machine
// (a token issued at x.999 s still lives 4 s), short enough to wait out.
const shortLived = { ACCESS_TOKEN_TTL: '5s' }

const bearer = (accessToken: string) => ({ headers: { authorization: `Bearer ${accessToken}` } })
const postJson = (url: string, body: object) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

t.test('the lifecycle: register → profile → expired token refreshed unseen → sessions → logout → logged out', async t => {
  const { baseUrl, refreshes } = await serve(t, shortLived)
  const loggedOut: ErrorCode[] = []
  const latchkey = createLatchkey({ baseUrl, onLoggedOut: code => loggedOut.push(code) })
  const email = uniqueEmail()

  const registered = await latchkey.register({ email, password })
  t.equal(registered.user.email, email)
  t.same(await latchkey.tokens(), registered.tokens, 'the tokens are stored')

  const profile = await latchkey.api.GET('/profile')
  t.equal(profile.response.status, 200)
  t.equal(profile.data?.email, email)

  await expire(registered.tokens.accessToken)
  t.equal((await fetch(`${baseUrl}/profile`, bearer(registered.tokens.accessToken))).status, 401, 'the stored access token has expired')
  const sessions = await latchkey.api.GET('/sessions')
  t.equal(sessions.response.status, 200, 'the call succeeds anyway')
  t.equal(sessions.data?.sessions.length, 1)
  t.equal(sessions.data?.sessions[0].current, true)
  t.same(refreshes(), [200], 'through one refresh')
  const renewed = await latchkey.tokens() as Tokens
  t.not(renewed.accessToken, registered.tokens.accessToken, 'a new access token is stored')
  t.not(renewed.refreshToken, registered.tokens.refreshToken, 'and the rotated refresh token')
  t.equal(claims(renewed.accessToken).sid, claims(registered.tokens.accessToken).sid, 'of the same session')

  await latchkey.logout()
  t.equal(await latchkey.tokens(), null, 'logout clears the tokens')
  const after = await latchkey.api.GET('/profile')
  t.equal(after.response.status, 401, 'the next call reports logged out')
  t.equal(after.error?.code, 'token_missing')
  t.same(refreshes(), [200], 'without trying to refresh: there is nothing to refresh with')
  t.same(loggedOut, [], 'a logout asked for is not reported as a lost session')

  const old = await fetch(`${baseUrl}/profile`, bearer(renewed.accessToken))
  t.equal(old.status, 401, 'the server killed the access token')
  t.equal((await old.json()).code, 'token_revoked')
  const oldRefresh = await postJson(`${baseUrl}/auth/refresh`, { refreshToken: renewed.refreshToken })
  t.equal(oldRefresh.status, 400, 'and the refresh token')
})

t.test('10 concurrent calls with an expired access token: one refresh, all 10 succeed', async t => {
  const { baseUrl, replies, refreshes } = await serve(t, shortLived)
  let refreshesSent = 0
  const counting = async (request: Request) => {
    if (request.method === 'POST' && new URL(request.url).pathname === '/auth/refresh') refreshesSent++
    return await fetch(request)
  }
  const latchkey = createLatchkey({ baseUrl, fetch: counting })
  const { tokens } = await latchkey.register({ email: uniqueEmail(), password })
  await expire(tokens.accessToken)

  const results = await Promise.all(Array.from({ length: 10 }, () => latchkey.api.GET('/profile')))
  t.same(results.map(r => r.response.status), Array(10).fill(200), 'all 10 succeed')
  t.equal(refreshesSent, 1, 'the client sent one refresh')
  t.same(refreshes(), [200], 'the server answered one refresh')
  const profiles = replies.filter(r => r.url === '/profile').map(r => r.status)
  t.same(profiles.filter(s => s === 401).length, 10, 'all 10 were refused first (the token had expired)')
  t.same(profiles.filter(s => s === 200).length, 10, 'and retried once each')
})

t.test('a retried request keeps its body', async t => {
  const smtp = await startSmtp(t)
  const { app, baseUrl, refreshes } = await serve(t, { ...shortLived, SMTP_URL: smtp.url })
  const latchkey = createLatchkey({ baseUrl })
  const email = uniqueEmail()
  const { tokens } = await latchkey.register({ email, password })
  const verified = await latchkey.api.POST('/auth/email/verify', { body: { email, code: await lastCode(app, smtp, email) } })
  t.equal(verified.response.status, 200)

  await expire(tokens.accessToken)
  const renamed = await latchkey.api.PATCH('/profile', { body: { name: 'Ada Lovelace' } })
  t.equal(renamed.response.status, 200)
  t.equal(renamed.data?.name, 'Ada Lovelace')
  t.same(refreshes(), [200])
  t.equal((await latchkey.api.GET('/profile')).data?.name, 'Ada Lovelace', 'the change is stored')

  t.test('a password change keeps the reply\'s new pair (every earlier token died)', async t => {
    const changed = await latchkey.api.POST('/auth/password/change', { body: { currentPassword: password, newPassword: 'another long passphrase' } })
    t.equal(changed.response.status, 200)
    t.same(await latchkey.tokens(), changed.data?.tokens, 'the new pair is stored')
    t.equal((await latchkey.api.GET('/profile')).response.status, 200)
    t.same(refreshes(), [200], 'without a refresh')
  })
})

t.test('two tabs sharing one session refresh at once: both keep working', async t => {
  // A reuse interval no loaded machine outlasts between the two tabs' refreshes.
  const { baseUrl, refreshes } = await serve(t, { ...shortLived, REFRESH_REUSE_INTERVAL: '60s' })
  const loggedOut: ErrorCode[] = []
  const first = createLatchkey({ baseUrl, onLoggedOut: code => loggedOut.push(code) })
  const { tokens } = await first.register({ email: uniqueEmail(), password })
  // The second tab read the same tokens when it opened.
  const second = createLatchkey({ baseUrl, storage: memoryStorage({ ...tokens }), onLoggedOut: code => loggedOut.push(code) })
  await expire(tokens.accessToken)

  const [a, b] = await Promise.all([first.api.GET('/profile'), second.api.GET('/profile')])
  t.equal(a.response.status, 200)
  t.equal(b.response.status, 200)
  t.same(refreshes(), [200, 200], 'each tab refreshed the same token, within the reuse interval')
  const [ta, tb] = [await first.tokens() as Tokens, await second.tokens() as Tokens]
  t.equal(claims(ta.refreshToken as string).jti, claims(tb.refreshToken as string).jti, 'both hold the one successor')

  // And again, one after the other: the second presents what the first just rotated.
  await first.refresh()
  await second.refresh()
  t.equal((await first.api.GET('/sessions')).response.status, 200)
  t.equal((await second.api.GET('/sessions')).response.status, 200)
  t.same(loggedOut, [], 'nobody was logged out')
})

t.test('a theft-revoked session ends in onLoggedOut with the storage cleared', async t => {
  t.test('the thief replays the stale token: the client\'s next call finds the session revoked', async t => {
    const { baseUrl } = await serve(t, { REFRESH_REUSE_INTERVAL: '0' })
    const loggedOut: ErrorCode[] = []
    const storage = memoryStorage()
    const latchkey = createLatchkey({ baseUrl, storage, onLoggedOut: code => loggedOut.push(code) })
    const { tokens: stolen } = await latchkey.register({ email: uniqueEmail(), password })
    await latchkey.refresh()
    // Past the (zero) reuse interval, so the replay is theft and not a second tab.
    await sleep(5)
    const replay = await postJson(`${baseUrl}/auth/refresh`, { refreshToken: stolen.refreshToken })
    t.equal(replay.status, 400)
    t.equal((await replay.json()).code, 'refresh_reused')

    const next = await latchkey.api.GET('/profile')
    t.equal(next.response.status, 401)
    t.equal(next.error?.code, 'token_revoked')
    t.same(loggedOut, ['token_revoked'], 'the refresh it tried was refused: logged out, once')
    t.equal(await storage.get(), null, 'the storage is cleared')
  })

  t.test('the thief refreshed first: the client\'s own refresh is the reuse', async t => {
    const { baseUrl } = await serve(t, { REFRESH_REUSE_INTERVAL: '0' })
    const loggedOut: ErrorCode[] = []
    const storage = memoryStorage()
    const latchkey = createLatchkey({ baseUrl, storage, onLoggedOut: code => loggedOut.push(code) })
    const { tokens } = await latchkey.register({ email: uniqueEmail(), password })
    const thief = await (await postJson(`${baseUrl}/auth/refresh`, { refreshToken: tokens.refreshToken })).json()
    await sleep(5)

    const refused = await latchkey.refresh().catch((err: unknown) => err)
    t.ok(isLatchkeyError(refused))
    t.equal((refused as LatchkeyError).code, 'refresh_reused')
    t.equal((refused as LatchkeyError).status, 400)
    t.same(loggedOut, ['refresh_reused'])
    t.equal(await storage.get(), null)
    const thiefAgain = await postJson(`${baseUrl}/auth/refresh`, { refreshToken: thief.tokens.refreshToken })
    t.equal(thiefAgain.status, 400, "the thief's branch died with the session")
  })
})

t.test('errors carry the §12 code', async t => {
  const { baseUrl } = await serve(t)
  const latchkey = createLatchkey({ baseUrl: `${baseUrl}/` })
  const email = uniqueEmail()
  await latchkey.register({ email, password })

  const taken = await latchkey.register({ email, password }).catch((err: unknown) => err)
  t.ok(taken instanceof LatchkeyError)
  t.match(taken, { code: 'email_taken', status: 409, message: /already exists/ })

  const wrong = await createLatchkey({ baseUrl }).login({ email, password: 'not the password' }).catch((err: unknown) => err)
  t.match(wrong, { code: 'invalid_credentials', status: 401 })

  const refused = await createLatchkey({ baseUrl }).refresh().catch((err: unknown) => err)
  t.match(refused, { code: 'token_missing', status: 401 }, 'refresh without a refresh token, before asking the server')

  const invalid = await latchkey.api.GET('/sessions')
  t.equal(invalid.response.status, 200, 'a trailing slash in baseUrl is fine')
  const notFound = await latchkey.api.DELETE('/sessions/{id}', { params: { path: { id: '00000000-0000-4000-8000-000000000000' } } })
  t.equal(notFound.response.status, 404)
  t.equal(notFound.error?.code, 'not_found', 'api errors are typed by code too')

  const unreachable = await createLatchkey({ baseUrl: `${baseUrl}/nowhere` }).login({ email, password }).catch((err: unknown) => err)
  t.match(unreachable, { code: 'not_found', status: 404 }, 'a reply without the error shape gets a code by its status')
})

t.test('with rotation off, a refresh keeps the refresh token', async t => {
  const { baseUrl } = await serve(t, { ROTATE_REFRESH_TOKENS: 'false' })
  const latchkey = createLatchkey({ baseUrl })
  const { tokens } = await latchkey.register({ email: uniqueEmail(), password })
  const renewed = await latchkey.refresh()
  t.not(renewed.accessToken, tokens.accessToken)
  t.equal(renewed.refreshToken, tokens.refreshToken, 'the old refresh token is still the one to use')
  t.equal((await latchkey.refresh()).refreshToken, tokens.refreshToken, 'and it works again')
})

t.test('logout scopes', async t => {
  const { baseUrl } = await serve(t)
  const email = uniqueEmail()
  const phone = createLatchkey({ baseUrl })
  await phone.register({ email, password })
  const laptop = createLatchkey({ baseUrl })
  await laptop.login({ email, password })

  await laptop.logout('others')
  t.ok(await laptop.tokens(), '`others` keeps this session and its tokens')
  t.equal((await laptop.api.GET('/profile')).response.status, 200)
  const phoneCall = await phone.api.GET('/profile')
  t.equal(phoneCall.response.status, 401, 'the other device is logged out')
  t.equal(await phone.tokens(), null)

  await laptop.logout('local')
  t.equal(await laptop.tokens(), null)
  await laptop.logout()
  t.pass('logging out again, with nothing held, is not an error')
})

t.test('logout with an expired access token uses the refresh token', async t => {
  const { baseUrl } = await serve(t, shortLived)
  const latchkey = createLatchkey({ baseUrl })
  const { tokens } = await latchkey.register({ email: uniqueEmail(), password })
  await expire(tokens.accessToken)
  await latchkey.logout()
  t.equal(await latchkey.tokens(), null)
  const dead = await postJson(`${baseUrl}/auth/refresh`, { refreshToken: tokens.refreshToken })
  t.equal(dead.status, 400, 'the session really ended at the server')
  t.equal((await dead.json()).code, 'token_revoked')
})

t.test('the localStorage adapter: two tabs of one origin share the tokens', async t => {
  const { baseUrl, refreshes } = await serve(t, shortLived)
  const origin = new MemoryWebStorage()
  const first = createLatchkey({ baseUrl, storage: localStorageTokens('latchkey', origin) })
  const { tokens } = await first.register({ email: uniqueEmail(), password })
  t.same(JSON.parse(origin.getItem('latchkey') as string), tokens, 'stored as JSON under the key')
  const second = createLatchkey({ baseUrl, storage: localStorageTokens('latchkey', origin) })
  t.same(await second.tokens(), tokens, 'the other tab reads them')

  await expire(tokens.accessToken)
  t.equal((await first.api.GET('/profile')).response.status, 200)
  t.equal((await second.api.GET('/profile')).response.status, 200)
  t.same(refreshes(), [200], "the second tab used the first tab's refresh")

  origin.setItem('latchkey', 'not json')
  t.equal(await second.tokens(), null, 'a foreign value reads as no tokens')
  await second.logout()
  t.equal(origin.getItem('latchkey'), null, 'logout removes the key')
})

/** Web Storage as a browser's localStorage behaves, for node. */
class MemoryWebStorage implements Storage {
  #items = new Map<string, string>()
  get length () { return this.#items.size }
  clear () { this.#items.clear() }
  getItem (key: string) { return this.#items.get(key) ?? null }
  key (index: number) { return [...this.#items.keys()][index] ?? null }
  removeItem (key: string) { this.#items.delete(key) }
  setItem (key: string, value: string) { this.#items.set(key, String(value)) }
}
