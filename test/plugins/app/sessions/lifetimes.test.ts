import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { authed, build, login, password, refresh, register, registerVerified, startSmtp, type App, type Tokens } from '../../../helper.js'

const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))
const profile = (app: App, tokens: Tokens) => authed(app, tokens.accessToken, { url: '/profile' })

interface Listed { id: string, createdAt: string, lastSeenAt: string, expiresAt: string, current: boolean }
async function listed (app: App, tokens: Tokens): Promise<Listed[]> {
  const res = await authed(app, tokens.accessToken, { url: '/sessions' })
  if (res.statusCode !== 200) throw new Error(`sessions: ${res.statusCode} ${res.body}`)
  return res.json().sessions
}
const mine = async (app: App, tokens: Tokens) => (await listed(app, tokens)).find(s => s.id === claims(tokens.accessToken).sid) as Listed

/** Waits until the clock has passed the moment (plus a little, for the database's clock and rounding). */
async function until (moment: string | number) {
  const at = typeof moment === 'string' ? Date.parse(moment) : moment
  while (Date.now() <= at + 50) await sleep(Math.max(10, at + 50 - Date.now()))
}

t.test('SESSION_IDLE_TIMEOUT: a session not refreshed for that long ends; refreshing keeps it alive', async t => {
  const app = await build(t, { SESSION_IDLE_TIMEOUT: '4s' })
  const account = await register(app)
  const idle = await login(app, account.email, 'idle')

  const listedIdle = await mine(app, idle)
  t.equal(Date.parse(listedIdle.expiresAt), Date.parse(listedIdle.lastSeenAt) + 4000, 'GET /sessions says when it ends: last seen + the idle timeout')

  // Refreshed every second for longer than the timeout: each refresh restarts it.
  let tokens = account.tokens
  const started = Date.now()
  while (Date.now() - started < 5000) {
    await sleep(1000)
    const res = await refresh(app, tokens.refreshToken)
    t.equal(res.statusCode, 200, 'a refresh within the idle timeout works')
    tokens = res.json().tokens
  }

  await until(listedIdle.expiresAt)
  t.equal((await profile(app, idle)).statusCode, 200, 'an access token already issued lives out its own exp')
  const res = await refresh(app, idle.refreshToken)
  t.equal(res.statusCode, 400, 'the idle session cannot be refreshed')
  t.equal(res.json().code, 'token_revoked')
  const ids = (await listed(app, tokens)).map(s => s.id)
  t.same(ids, [claims(tokens.accessToken).sid], 'GET /sessions no longer lists it')
  t.equal((await refresh(app, tokens.refreshToken)).statusCode, 200, 'the session kept alive still refreshes')
})

t.test('an idle session no longer counts toward DEVICE_LIMIT', async t => {
  const app = await build(t, { SESSION_IDLE_TIMEOUT: '2s', DEVICE_LIMIT: '1' })
  const account = await register(app)
  const refused = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password } })
  t.equal(refused.statusCode, 409, 'the registration session fills the limit')
  await until((await mine(app, account.tokens)).expiresAt)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password } })
  t.equal(res.statusCode, 200, 'once it has idled out, there is room')
})

t.test('SESSION_MAX_LIFETIME: no token outlives the session, and no refresh extends it', async t => {
  // The leeway lets the tokens' signatures outlast their exp: what ends them then is the session's lifetime.
  const app = await build(t, { SESSION_MAX_LIFETIME: '3s', ACCESS_TOKEN_TTL: '1h', REFRESH_TOKEN_TTL: '1d', JWT_LEEWAY: '60' })
  const account = await register(app)
  const session = await mine(app, account.tokens)
  const end = Date.parse(session.createdAt) + 3000
  t.equal(Date.parse(session.expiresAt), end, 'GET /sessions says when it ends: created + the maximum lifetime')

  const first = { access: claims(account.tokens.accessToken), refresh: claims(account.tokens.refreshToken as string) }
  t.equal(first.access.exp, Math.floor(end / 1000), "the access token's exp is the session's end, not an hour away")
  t.equal(first.refresh.exp, Math.floor(end / 1000), "the refresh token's exp too, not a day away")
  t.equal(account.tokens.expiresIn, first.access.exp - first.access.iat, 'expiresIn says so')
  t.ok(account.tokens.refreshExpiresIn !== undefined && account.tokens.refreshExpiresIn <= 3)

  const res = await refresh(app, account.tokens.refreshToken)
  t.equal(res.statusCode, 200)
  const next: Tokens = res.json().tokens
  t.equal(claims(next.refreshToken as string).exp, Math.floor(end / 1000), 'a rotation does not extend the session')
  t.equal(claims(next.accessToken).exp, Math.floor(end / 1000))

  await until(end)
  const denied = await profile(app, next)
  t.equal(denied.statusCode, 401, 'past its lifetime the session is over for the authenticate hook')
  t.equal(denied.json().code, 'token_revoked')
  const again = await refresh(app, next.refreshToken)
  t.equal(again.statusCode, 400, 'and for refresh')
  t.equal(again.json().code, 'token_revoked')
  const verified = await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token: next.accessToken } })
  t.equal(verified.statusCode, 401, 'and for verify')
  t.equal((await login(app, account.email)).expiresIn, 3, 'logging in again opens a new session')
})

t.test('SESSION_MAX_LIFETIME without leeway: the capped exp itself ends the tokens', async t => {
  const app = await build(t, { SESSION_MAX_LIFETIME: '2s', ACCESS_TOKEN_TTL: '1h', REFRESH_TOKEN_TTL: '1d' })
  const account = await register(app)
  await until(claims(account.tokens.refreshToken as string).exp * 1000)
  const res = await refresh(app, account.tokens.refreshToken)
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'token_expired')
  t.equal((await profile(app, account.tokens)).json().code, 'token_expired')
})

t.test('password change inside the lifetime keeps the session\'s end', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, SESSION_MAX_LIFETIME: '1h', ACCESS_TOKEN_TTL: '2h', REFRESH_TOKEN_TTL: '1d' })
  const account = await registerVerified(app, smtp)
  const end = Date.parse((await mine(app, account.tokens)).createdAt) + 3600_000
  const res = await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/password/change', payload: { currentPassword: password, newPassword: 'another correct horse battery' } })
  t.equal(res.statusCode, 200)
  const tokens: Tokens = res.json().tokens
  t.equal(claims(tokens.accessToken).exp, Math.floor(end / 1000))
  t.equal(claims(tokens.refreshToken as string).exp, Math.floor(end / 1000))
})
