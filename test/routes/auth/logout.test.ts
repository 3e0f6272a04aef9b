import t from 'tap'
import { authed, build, login, refresh, register, type App, type Tokens } from '../../helper.js'

const logout = (app: App, tokens: Tokens, payload: object = {}) =>
  authed(app, tokens.accessToken, { method: 'POST', url: '/auth/logout', payload })

async function works (app: App, tokens: Tokens) {
  return (await authed(app, tokens.accessToken, { url: '/profile' })).statusCode === 200
}

t.test('global (the default): every token of the user dies on every device', async t => {
  const app = await build(t)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')

  const res = await logout(app, account.tokens)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')

  const again = await authed(app, account.tokens.accessToken, { url: '/profile' })
  t.equal(again.statusCode, 401, 'the old access token is refused on the next request')
  t.equal(again.json().code, 'token_revoked')
  t.equal(again.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  const old = await refresh(app, account.tokens.refreshToken)
  t.equal(old.statusCode, 400, 'the old refresh token is refused')
  t.equal(old.json().code, 'token_revoked')
  t.notOk(await works(app, phone), "the phone's access token died too")
  t.equal((await refresh(app, phone.refreshToken)).statusCode, 400, "the phone's refresh token died too")

  const fresh = await login(app, account.email)
  t.ok(await works(app, fresh), 'logging in again works')
})

t.test('local: only this session ends', async t => {
  const app = await build(t)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')

  t.equal((await logout(app, account.tokens, { scope: 'local' })).statusCode, 204)
  t.notOk(await works(app, account.tokens), 'this session is over')
  t.equal((await refresh(app, account.tokens.refreshToken)).statusCode, 400)
  t.ok(await works(app, phone), 'the other device keeps working')
  t.equal((await refresh(app, phone.refreshToken)).statusCode, 200)
})

t.test('others: every session but the caller ends', async t => {
  const app = await build(t)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')
  const tablet = await login(app, account.email, 'tablet')

  t.equal((await logout(app, account.tokens, { scope: 'others' })).statusCode, 204)
  t.ok(await works(app, account.tokens), 'the caller keeps working')
  t.equal((await refresh(app, account.tokens.refreshToken)).statusCode, 200)
  t.notOk(await works(app, phone))
  t.notOk(await works(app, tablet))
  t.equal((await refresh(app, tablet.refreshToken)).statusCode, 400)

  const sessions = (await authed(app, account.tokens.accessToken, { url: '/sessions' })).json().sessions
  t.equal(sessions.length, 1, 'one session left')
  t.equal(sessions[0].current, true)
})

t.test('by refresh token when the access token is gone', async t => {
  const app = await build(t)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')

  const res = await app.inject({ method: 'POST', url: '/auth/logout', payload: { refreshToken: account.tokens.refreshToken, scope: 'local' } })
  t.equal(res.statusCode, 204)
  t.notOk(await works(app, account.tokens), "the session's access token died")
  t.equal((await refresh(app, account.tokens.refreshToken)).statusCode, 400, 'the refresh token is blacklisted')
  t.ok(await works(app, phone))

  const twice = await app.inject({ method: 'POST', url: '/auth/logout', payload: { refreshToken: account.tokens.refreshToken } })
  t.equal(twice.statusCode, 401, 'a dead refresh token cannot log out again')
  t.equal(twice.json().code, 'token_revoked')
})

t.test('refused without credentials or with bad input', async t => {
  const app = await build(t)
  const account = await register(app)

  const none = await app.inject({ method: 'POST', url: '/auth/logout', payload: {} })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'token_missing')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="latchkey"')

  const scope = await logout(app, account.tokens, { scope: 'everything' })
  t.equal(scope.statusCode, 400)
  t.equal(scope.json().code, 'validation_failed')
  t.ok(await works(app, account.tokens), 'nothing was revoked by a bad request')
})

t.test('sessions: list and revoke one', async t => {
  const app = await build(t)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')
  const other = await register(app)

  const list = await authed(app, account.tokens.accessToken, { url: '/sessions' })
  t.equal(list.statusCode, 200)
  const sessions = list.json().sessions
  t.equal(sessions.length, 2)
  const phoneSession = sessions.find((s: { deviceName: string }) => s.deviceName === 'phone')
  t.equal(phoneSession.current, false)

  const foreign = await authed(app, other.tokens.accessToken, { method: 'DELETE', url: `/sessions/${phoneSession.id}` })
  t.equal(foreign.statusCode, 404, "someone else's session is not found")
  t.ok(await works(app, phone), 'and stays alive')

  const own = await authed(app, account.tokens.accessToken, { method: 'DELETE', url: `/sessions/${phoneSession.id}` })
  t.equal(own.statusCode, 204)
  t.notOk(await works(app, phone), 'the revoked session dies at once')
  t.ok(await works(app, account.tokens))
})

t.test('an expired access token with a live refresh token still logs out', async t => {
  const app = await build(t, { ACCESS_TOKEN_TTL: '1' })
  const account = await register(app)
  await new Promise(resolve => setTimeout(resolve, 2100))
  const expired = await authed(app, account.tokens.accessToken, { url: '/profile' })
  t.equal(expired.json().code, 'token_expired')

  const res = await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { refreshToken: account.tokens.refreshToken, scope: 'local' } })
  t.equal(res.statusCode, 204)
  t.equal((await refresh(app, account.tokens.refreshToken)).statusCode, 400, 'the session is over')

  const without = await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  t.equal(without.statusCode, 401, 'without a refresh token the expired access token is refused')
  t.equal(without.json().code, 'token_expired')
})
