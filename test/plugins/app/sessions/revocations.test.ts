import t from 'tap'
import { authed, build, login, realBackends, register, type App } from '../../../helper.js'
import { race, type Shot } from '../../../race.js'
import { stateChannel } from '../../../../plugins/app/sessions/auth-state.js'

const feed = { REVOCATION_FEED_TOKEN: 'feed-token-feed-token-feed-token-0123' }

const counter = async (app: App) => Number((await app.db.selectFrom('revocation_counter').select('last').executeTakeFirstOrThrow()).last)
/**
 * The counter and the rows after `after`, in one snapshot. Other test files
 * revoke on the same database meanwhile, so a test looks at its own rows by id
 * and at everyone's numbers only for what holds whoever commits: the committed
 * numbers run without a gap up to the counter.
 */
async function committed (app: App, after: number) {
  return await app.db.transaction().setIsolationLevel('repeatable read').execute(async trx => {
    const last = Number((await trx.selectFrom('revocation_counter').select('last').executeTakeFirstOrThrow()).last)
    const rows = await trx.selectFrom('revocations').selectAll().where('seq', '>', after).orderBy('seq').execute()
    return { last, rows, gapless: rows.every((r, i) => Number(r.seq) === after + 1 + i) && (rows.length === 0 ? last === after : Number(rows[rows.length - 1].seq) === last) }
  })
}
const sidOf = (accessToken: string): string => JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString()).sid

/** Resolves once the app has heard, through PostgreSQL's notifications, a change naming `id`. */
function heard (app: App, id: string): Promise<void> {
  return new Promise(resolve => {
    app.notifications.on(stateChannel, payload => { if (payload.includes(id)) resolve() })
  })
}

t.test('every token-version bump and ended session is recorded with its version, in its transaction', async t => {
  const app = await build(t, feed)
  const before = await counter(app)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')
  const tablet = await login(app, account.email, 'tablet')
  t.equal((await authed(app, tablet.accessToken, { method: 'DELETE', url: `/sessions/${sidOf(phone.accessToken)}` })).statusCode, 204)
  await app.accounts.changeUser(null, account.id, { disabled: true })
  const ended = [sidOf(account.tokens.accessToken), sidOf(tablet.accessToken)].sort()
  const mine = new Set([account.id, sidOf(phone.accessToken), ...ended])
  const after = await committed(app, before)
  t.ok(after.gapless, 'the numbers run without a gap up to the counter')
  const rows = after.rows.filter(r => mine.has(r.id))
  t.equal(rows.length, 4, 'four revocations of this account')
  t.ok(rows.every((r, i) => i === 0 || Number(r.seq) > Number(rows[i - 1].seq)), 'numbered in commit order')
  t.same(rows.slice(0, 2).map(r => [r.kind, r.id, r.token_version]), [
    ['session', sidOf(phone.accessToken), null],
    ['user', account.id, 1]
  ], 'the revoked session, then the user disabled')
  t.same(rows.slice(2).map(r => [r.kind, r.id, r.token_version]).sort(), ended.map(id => ['session', id, null]), 'and the sessions disabling ended')
})

t.test('a revocation whose transaction rolls back leaves no row, no number used and no notification', async t => {
  const app = await build(t, feed)
  const before = await counter(app)
  const account = await register(app)
  const naming: string[] = []
  app.notifications.on(stateChannel, payload => { if (payload.includes(account.id)) naming.push(payload) })
  await t.rejects(app.transaction(async (trx, afterCommit) => {
    await app.revocations.revoked(trx, afterCommit, { users: [{ id: account.id, tokenVersion: 7 }] })
    throw new Error('rolled back')
  }))
  const rolledBack = await committed(app, before)
  t.ok(rolledBack.gapless, 'the number went back: the committed numbers run without a gap up to the counter')
  t.same(rolledBack.rows.filter(r => r.id === account.id), [], 'no row')
  const logout = heard(app, account.id)
  await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  const loggedOut = await committed(app, before)
  t.ok(loggedOut.gapless, 'the next revocations take the next numbers: no gap')
  t.same(loggedOut.rows.filter(r => r.id === account.id).map(r => [r.kind, r.token_version]), [['user', 1]], 'the logout\'s, with the version it set')
  await logout
  // Notifications come in commit order: the rolled-back one would have come first.
  t.equal(naming.length, 1, 'only the logout was announced, not the rolled-back revocation')
})

t.test('two instances on one database hear each other\'s revocations through its notifications', async t => {
  const a = await build(t)
  const b = await build(t)
  const account = await register(a)
  const phone = await login(a, account.email, 'phone')
  t.equal((await authed(b, account.tokens.accessToken, { url: '/profile' })).statusCode, 200, 'b has the state cached')
  const arrived = heard(b, account.id)
  t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'others' } })).statusCode, 204)
  const arrivedUser = heard(b, account.id)
  t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
  await arrived
  await arrivedUser
  t.equal((await authed(b, phone.accessToken, { url: '/profile' })).statusCode, 401, 'the ended session is refused on b')
  t.equal((await authed(b, account.tokens.accessToken, { url: '/profile' })).statusCode, 401, 'the logged-out user is refused on b')
})

t.test('concurrent revocations: numbers are gapless and a reader following the table never misses one', { skip: realBackends ? false : 'needs PostgreSQL: the embedded database runs one transaction at a time' }, async t => {
  const app = await build(t, feed)
  const accounts = await Promise.all(Array.from({ length: 30 }, () => register(app)))
  const phones = await Promise.all(accounts.map(a => login(app, a.email, 'phone')))
  const before = await counter(app)
  // A reader resuming after the last number it saw, while the revocations commit.
  const seen: number[] = []
  const racing = { on: true }
  const reader = (async () => {
    let cursor = before
    while (racing.on || cursor < await counter(app)) {
      const page = await app.revocations.list(cursor)
      t.notOk(page.reset, 'never a reset')
      seen.push(...page.events.map(e => e.seq))
      cursor = page.last
    }
  })()
  const shots: Shot[] = accounts.flatMap((a, i) => [
    { url: '/auth/logout', accessToken: a.tokens.accessToken },
    { method: 'DELETE', url: `/sessions/${sidOf(phones[i].accessToken)}`, accessToken: phones[i].accessToken }
  ] satisfies Shot[])
  const replies = await race(app, shots)
  racing.on = false
  await reader
  t.same(replies.filter(r => r.status >= 500), [], 'no 5xx')
  const { rows, gapless } = await committed(app, before)
  t.ok(gapless, 'the numbers are gapless')
  // Other test files share the database and revoke meanwhile: the numbers are
  // everyone's (some may have committed after the reader stopped), the logouts this test's.
  const upTo = seen.at(-1) ?? before
  t.same(seen, rows.map(r => Number(r.seq)).filter(seq => seq <= upTo), 'the reader saw every one, in order, none arriving behind its cursor')
  const mine = new Set(accounts.map(a => a.id))
  const logouts = rows.filter(r => r.kind === 'user' && mine.has(r.id))
  t.equal(logouts.length, accounts.length, 'every global logout is there')
  t.ok(logouts.every(r => Number(r.seq) <= upTo), 'and the reader saw each of them')
})
