import t from 'tap'
import { findUserByEmail } from '../../../../db/queries/users.js'
import type { User } from '../../../../db/schema.js'
import { authed, build, password, refresh, register, type App } from '../../../helper.js'

// A login's writes in one statement (SPEC §16): the session, its refresh
// token, the login's event and last_login_at, all or none, and only while the
// user's row is still the one the password was checked against.

const device = { ip: '203.0.113.7', userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0' }

async function written (app: App, userId: string) {
  const [sessions, tokens, events, user] = await Promise.all([
    app.db.selectFrom('sessions').select(['id', 'device_name', 'ip', 'user_agent', 'dpop_jkt', 'created_at', 'last_seen_at']).where('user_id', '=', userId).orderBy('created_at').execute(),
    app.db.selectFrom('refresh_tokens').select(['jti', 'session_id', 'parent_jti', 'issued_at', 'expires_at']).where('user_id', '=', userId).orderBy('issued_at').execute(),
    app.db.selectFrom('audit_events').select(['type', 'session_id', 'ip', 'user_agent', 'detail']).where('user_id', '=', userId).orderBy('id').execute(),
    app.db.selectFrom('users').select('last_login_at').where('id', '=', userId).executeTakeFirstOrThrow()
  ])
  return { sessions, tokens, events, lastLoginAt: user.last_login_at }
}

const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { sid: string, jti: string, ver: number, exp: number }

t.test('a login opens its session, refresh token and event in one statement; the tokens work', async t => {
  const app = await build(t)
  const account = await register(app)
  const checked = await findUserByEmail(app.db, account.email) as User
  const before = await written(app, account.id)

  const opened = await app.sessions.openAtLogin(checked, { ...device, deviceName: 'laptop' })
  if (!opened) throw new Error('the row was not taken')
  const after = await written(app, account.id)
  const access = claims(opened.tokens.accessToken)
  const refreshClaims = claims(opened.tokens.refreshToken as string)

  t.equal(opened.session.id, access.sid, 'the access token names the session written')
  t.equal(refreshClaims.sid, access.sid)
  t.same(after.sessions.slice(before.sessions.length).map(s => [s.id, s.device_name, s.ip, s.user_agent, s.dpop_jkt]),
    [[access.sid, 'laptop', device.ip, device.userAgent, null]], 'one session, with the device it came from')
  t.same(after.tokens.slice(before.tokens.length).map(r => [r.jti, r.session_id, r.parent_jti, r.expires_at.getTime() / 1000]),
    [[refreshClaims.jti, access.sid, null, refreshClaims.exp]], 'its first refresh token, stored as signed')
  t.same(after.events.slice(before.events.length), [{ type: 'login.succeeded', session_id: access.sid, ip: device.ip, user_agent: device.userAgent, detail: {} }],
    'the login is in the audit trail, naming the session')
  t.equal(after.lastLoginAt?.getTime(), after.sessions.at(-1)?.created_at.getTime(), 'counted as the last login')

  t.equal((await authed(app, opened.tokens.accessToken, { url: '/profile' })).statusCode, 200, 'the access token is good')
  t.equal((await refresh(app, opened.tokens.refreshToken)).statusCode, 200, 'and the refresh token rotates')
})

t.test('a row changed since it was read writes nothing, whatever changed', async t => {
  const app = await build(t)
  const account = await register(app)
  const checked = await findUserByEmail(app.db, account.email) as User
  const stale: Array<[string, User]> = [
    ['another password', { ...checked, password_hash: `${checked.password_hash}x` }],
    ['an older token version', { ...checked, token_version: checked.token_version + 1 }],
    ['another role', { ...checked, role: 'admin' }],
    ['another verification', { ...checked, email_verified_at: new Date() }]
  ]
  const before = await written(app, account.id)
  for (const [what, user] of stale) {
    t.equal(await app.sessions.openAtLogin(user, device), undefined, `${what}: not opened`)
  }
  await app.db.updateTable('users').set({ disabled_at: new Date() }).where('id', '=', account.id).execute()
  t.equal(await app.sessions.openAtLogin(checked, device), undefined, 'a disabled account: not opened')
  t.same(await written(app, account.id), before, 'no session, token, event or login time was written')
})

t.test('with DEVICE_LIMIT set there is a count to take under the row: the one statement stands aside', async t => {
  const app = await build(t, { DEVICE_LIMIT: '3' })
  const account = await register(app)
  const checked = await findUserByEmail(app.db, account.email) as User
  const before = await written(app, account.id)
  t.equal(await app.sessions.openAtLogin(checked, device), undefined)
  t.same(await written(app, account.id), before, 'nothing written')
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password } })
  t.equal(res.statusCode, 200, 'the login goes through the transaction')
})
