import t from 'tap'
import { build, dbFault, lastCode, password, registerAdmin, registerVerified, startSmtp, uniqueEmail, type App, type Tokens } from '../../helper.js'

// Every request of the story comes from one place, so each event can be checked for it.
const from = { remoteAddress: '203.0.113.7', headers: { 'user-agent': 'audit-test/1.0' } }
const send = (app: App, method: 'GET' | 'POST' | 'PATCH', url: string, payload?: object, tokens?: Tokens) =>
  app.inject({ method, url, payload, remoteAddress: from.remoteAddress, headers: { ...from.headers, ...(tokens && { authorization: `Bearer ${tokens.accessToken}` }) } })

interface Event { id: string, type: string, at: string, userId: string | null, sessionId: string | null, ip: string | null, userAgent: string | null, detail: Record<string, unknown> }

async function trail (app: App, admin: Tokens, query: string): Promise<Event[]> {
  const events: Event[] = []
  let cursor: string | null = null
  do {
    const res = await send(app, 'GET', `/admin/audit-events?limit=3&${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, undefined, admin)
    if (res.statusCode !== 200) throw new Error(`audit-events: ${res.statusCode} ${res.body}`)
    events.push(...res.json().items)
    cursor = res.json().nextCursor
  } while (cursor !== null)
  return events
}

t.test('the audit trail holds each change once, with who, which session, from where', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, REFRESH_REUSE_INTERVAL: '0' })
  const admin = await registerAdmin(app)
  const email = uniqueEmail('audited')
  const unknownEmail = uniqueEmail('nobody')

  const registered = await send(app, 'POST', '/auth/register', { email, password })
  const user = registered.json().user
  const first: Tokens = registered.json().tokens
  t.equal((await send(app, 'POST', '/auth/login', { email, password: 'wrong password here' })).statusCode, 401)
  t.equal((await send(app, 'POST', '/auth/login', { email: unknownEmail, password })).statusCode, 401)
  // Theft: the token before the current one is presented again after the current one was used.
  const second = (await send(app, 'POST', '/auth/refresh', { refreshToken: first.refreshToken })).json().tokens
  t.ok((await send(app, 'POST', '/auth/refresh', { refreshToken: second.refreshToken })).statusCode === 200)
  t.equal((await send(app, 'POST', '/auth/refresh', { refreshToken: first.refreshToken })).json().code, 'refresh_reused')
  const other = (await send(app, 'POST', '/auth/login', { email, password })).json().tokens
  await send(app, 'POST', '/auth/login', { email, password })
  await send(app, 'POST', '/auth/password/forgot', { email })
  const code = await lastCode(app, smtp, email)
  t.equal((await send(app, 'POST', '/auth/password/reset', { email, code, newPassword: 'a brand new password' })).statusCode, 204)
  t.equal((await send(app, 'PATCH', `/admin/users/${user.id}`, { disabled: true }, admin.tokens)).statusCode, 200)

  const events = await trail(app, admin.tokens, `userId=${user.id}`)
  const types = events.map(e => e.type).reverse()
  t.same(types, [
    'user.registered', 'login.failed', 'refresh.reuse_detected', 'login.succeeded', 'login.succeeded', 'password.reset', 'user.disabled'
  ], 'each event once, oldest last in the newest-first list')
  for (const event of events) {
    t.equal(event.userId, user.id)
    t.equal(event.ip, from.remoteAddress, `${event.type}: the IP`)
    t.equal(event.userAgent, from.headers['user-agent'], `${event.type}: the User-Agent`)
  }
  const byType = (type: string) => events.find(e => e.type === type) as Event
  const sessionOf = (tokens: Tokens) => JSON.parse(Buffer.from(tokens.accessToken.split('.')[1], 'base64url').toString()).sid
  t.equal(byType('user.registered').sessionId, sessionOf(first), 'registration names its session')
  t.equal(byType('refresh.reuse_detected').sessionId, sessionOf(first), 'the theft names the session it ended')
  t.same(byType('login.failed').detail, { reason: 'wrong_password' }, 'admins see why a login failed')
  t.same(byType('password.reset').detail, { sessionsEnded: 2 }, 'one event for the reset, counting the sessions it ended')
  t.same(byType('user.disabled').detail, { by: admin.id, sessionsEnded: 0 })
  t.equal(sessionOf(other) !== null, true)

  const unknown = (await trail(app, admin.tokens, 'type=login.failed')).filter(e => e.detail.email === unknownEmail)
  t.equal(unknown.length, 1, 'a failed login for an unknown email is recorded too')
  t.same(unknown[0], { ...unknown[0], userId: null, sessionId: null, detail: { reason: 'unknown_email', email: unknownEmail } })

  const all = JSON.stringify(await trail(app, admin.tokens, `userId=${user.id}`))
  for (const secret of [password, 'a brand new password', code, first.accessToken, first.refreshToken as string, 'argon2']) {
    t.notOk(all.includes(secret), 'never a password, token, code or hash')
  }
  t.ok(smtp.to(email).length >= 2, 'the mails went out')

  const filtered = await trail(app, admin.tokens, `userId=${user.id}&type=login.succeeded`)
  t.same(filtered.map(e => e.type), ['login.succeeded', 'login.succeeded'], 'filtered by user and type')
  for (const query of ['type=made.up', 'userId=nope', 'cursor=zzz', 'limit=1000']) {
    const res = await send(app, 'GET', `/admin/audit-events?${query}`, undefined, admin.tokens)
    t.equal(res.statusCode, 400, query)
    t.equal(res.json().code, 'validation_failed')
  }
})

t.test('a change that rolls back leaves no event', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const admin = await registerAdmin(app)
  const account = await registerVerified(app, smtp)
  // The password change writes its event, then fails issuing the new pair: all of it rolls back.
  await dbFault(t, app.db, { table: 'refresh_tokens', userId: account.id, plpgsql: "raise exception 'injected fault';" })
  const res = await send(app, 'POST', '/auth/password/change', { currentPassword: password, newPassword: 'another password here' }, account.tokens)
  t.equal(res.statusCode, 500)
  const types = (await trail(app, admin.tokens, `userId=${account.id}`)).map(e => e.type)
  t.notOk(types.includes('password.changed'), 'no event without its change')
  t.equal((await send(app, 'GET', '/profile', undefined, account.tokens)).statusCode, 200, 'and no change: the old tokens live')
})

t.test('/profile/activity: the caller’s own events, without failed-login reasons', async t => {
  const app = await build(t)
  const email = uniqueEmail('mine')
  const mine = (await send(app, 'POST', '/auth/register', { email, password })).json()
  const theirs = (await send(app, 'POST', '/auth/register', { email: uniqueEmail('theirs'), password })).json()
  await send(app, 'POST', '/auth/login', { email, password: 'not my password' })
  await send(app, 'POST', '/auth/login', { email, password })
  const session = (await send(app, 'POST', '/auth/login', { email, password })).json().tokens
  t.equal((await send(app, 'POST', '/auth/logout', { scope: 'others' }, session)).statusCode, 204)

  const items: Event[] = []
  let cursor: string | null = null
  do {
    const res = await send(app, 'GET', `/profile/activity?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, undefined, session)
    t.equal(res.statusCode, 200)
    items.push(...res.json().items)
    cursor = res.json().nextCursor
  } while (cursor !== null)
  t.same(items.map(e => e.type), ['logout', 'login.succeeded', 'login.succeeded', 'login.failed', 'user.registered'])
  t.ok(items.every(e => e.userId === mine.user.id), 'nobody else’s')
  t.same(items.find(e => e.type === 'login.failed')?.detail, {}, 'the reason is for admins only')
  t.same(items[0].detail, { scope: 'others', sessionsEnded: 2 }, 'one logout event, counting the sessions ended')
  const theirsSeen = (await send(app, 'GET', '/profile/activity', undefined, theirs.tokens)).json().items
  t.same(theirsSeen.map((e: Event) => e.type), ['user.registered'])
  t.equal((await app.inject({ url: '/profile/activity' })).json().code, 'token_missing')
})
