import { randomUUID } from 'node:crypto'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { authed, build, login, password, realBackends, refresh, register, type App, type Tokens } from '../../../helper.js'

const profile = (app: App, tokens: Tokens) => authed(app, tokens.accessToken, { url: '/profile' })
const sessionRows = (app: App, userId: string) =>
  app.db.selectFrom('sessions').select(['id', 'device_name', 'revoked_at']).where('user_id', '=', userId).orderBy('created_at').execute()
const openRows = async (app: App, userId: string) => (await sessionRows(app, userId)).filter(row => row.revoked_at === null)
const events = (app: App, userId: string, type: string) =>
  app.db.selectFrom('audit_events').selectAll().where('user_id', '=', userId).where('type', '=', type).execute()
const sid = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).sid as string

t.test('reject: registration and one login fill DEVICE_LIMIT=2; a third login is refused until a logout makes room', async t => {
  const app = await build(t, { DEVICE_LIMIT: '2' })
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')

  const third = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password, deviceName: 'tablet' } })
  t.equal(third.statusCode, 409)
  t.same(third.json(), { statusCode: 409, code: 'device_limit_reached', error: 'Conflict', message: 'The limit of signed-in devices has been reached.' })
  t.same((await sessionRows(app, account.id)).map(row => row.device_name), ['lightMyRequest', 'phone'], 'no session row was written')
  t.equal((await profile(app, account.tokens)).statusCode, 200, 'the sessions already open are untouched')
  t.equal((await profile(app, phone)).statusCode, 200)
  const refusals = await events(app, account.id, 'login.device_limit_refused')
  t.same(refusals.map(e => [e.session_id, e.detail]), [[null, { limit: 2, active: 2 }]], 'the refusal is in the audit trail, once')
  t.same(await events(app, account.id, 'login.succeeded'), [{ ...(await events(app, account.id, 'login.succeeded'))[0], session_id: sid(phone.accessToken) }], 'and counts as no login')

  t.equal((await authed(app, phone.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204)
  const tablet = await login(app, account.email, 'tablet')
  t.equal((await profile(app, tablet)).statusCode, 200, 'a logout made room')
  t.same((await openRows(app, account.id)).map(row => row.device_name), ['lightMyRequest', 'tablet'])
})

t.test('DEVICE_LIMIT=0 (the default) lets any number of devices in', async t => {
  const app = await build(t)
  const account = await register(app)
  for (let i = 0; i < 4; i++) await login(app, account.email, `device ${i}`)
  t.equal((await openRows(app, account.id)).length, 5)
})

t.test('evict_oldest: the third login ends the least recently seen session; its tokens die at once', async t => {
  const app = await build(t, { DEVICE_LIMIT: '2', DEVICE_LIMIT_POLICY: 'evict_oldest' })
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')
  // The registration's session is the oldest, but a refresh makes it the more recently seen.
  const renewed = await refresh(app, account.tokens.refreshToken)
  t.equal(renewed.statusCode, 200)
  const laptop: Tokens = renewed.json().tokens
  t.equal((await profile(app, phone)).statusCode, 200, "the phone's state is cached")

  const tablet = await login(app, account.email, 'tablet')
  const evicted = await profile(app, phone)
  t.equal(evicted.statusCode, 401, "the evicted session's access token is refused at once")
  t.equal(evicted.json().code, 'token_revoked')
  const again = await refresh(app, phone.refreshToken)
  t.equal(again.statusCode, 400, 'and its refresh token')
  t.equal(again.json().code, 'token_revoked')
  t.equal((await profile(app, laptop)).statusCode, 200, 'the more recently seen session stays')
  t.equal((await profile(app, tablet)).statusCode, 200)
  const rows = await sessionRows(app, account.id)
  t.same(rows.filter(row => row.revoked_at === null).map(row => row.device_name), ['lightMyRequest', 'tablet'])
  t.ok(rows.find(row => row.device_name === 'phone')?.revoked_at, "the phone's row is revoked, not deleted")
  const evictions = await events(app, account.id, 'session.evicted')
  t.same(evictions.map(e => [e.session_id, e.detail]), [[sid(phone.accessToken), { policy: 'evict_oldest', limit: 2 }]], 'the audit trail has the eviction, naming the session')
})

t.test('evict_oldest across instances: the evicted token dies on the other instance too', { skip: realBackends && process.env.REDIS_URL ? false : 'needs DATABASE_URL and REDIS_URL' }, async t => {
  const shared = { CACHE_PREFIX: `latchkey-test-${randomUUID()}:`, DEVICE_LIMIT: '2', DEVICE_LIMIT_POLICY: 'evict_oldest' }
  const a = await build(t, shared)
  const b = await build(t, shared)
  const account = await register(a)
  const phone = await login(b, account.email, 'phone')
  t.equal((await profile(b, account.tokens)).statusCode, 200, 'b has the first session cached')
  await login(a, account.email, 'tablet')
  // SPEC §4.2: other instances within 100 ms.
  await sleep(100)
  const res = await profile(b, account.tokens)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'token_revoked')
  t.equal((await profile(b, phone)).statusCode, 200)
})

/** Opens every connection first, then writes every request in one go: the logins reach the server together. */
async function together (port: number, bodies: object[]): Promise<Array<{ status: number, body: { code?: string, tokens?: Tokens } }>> {
  const sockets = await Promise.all(bodies.map(() => new Promise<Socket>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket))
    socket.once('error', reject)
  })))
  const replies = sockets.map(socket => new Promise<string>((resolve, reject) => {
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', chunk => { data += chunk })
    socket.once('end', () => resolve(data))
    socket.once('error', reject)
  }))
  sockets.forEach((socket, i) => {
    const body = JSON.stringify(bodies[i])
    socket.write(`POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  })
  return (await Promise.all(replies)).map(reply => {
    const [head, body] = reply.split('\r\n\r\n')
    return { status: Number(head.split(' ')[1]), body: JSON.parse(body) }
  })
}

for (const policy of ['reject', 'evict_oldest'] as const) {
  t.test(`${policy}: 10 concurrent logins with DEVICE_LIMIT=2 leave exactly 2 sessions`, async t => {
    const app = await build(t, { DEVICE_LIMIT: '2', DEVICE_LIMIT_POLICY: policy })
    const account = await register(app)
    t.equal((await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204, 'no session open')
    await app.listen({ host: '127.0.0.1', port: 0 })
    const { port } = app.server.address() as AddressInfo

    const replies = await together(port, Array.from({ length: 10 }, (_, i) => ({ email: account.email, password, deviceName: `device ${i}` })))
    const ok = replies.filter(reply => reply.status === 200)
    if (policy === 'reject') {
      t.equal(ok.length, 2, 'two logins get in')
      t.same(replies.filter(reply => reply.status !== 200).map(reply => reply.body.code), Array(8).fill('device_limit_reached'), 'eight are refused')
    } else {
      t.equal(ok.length, 10, 'every login gets in, evicting older ones')
    }
    const open = await openRows(app, account.id)
    t.equal(open.length, 2, 'exactly two sessions are open')
    const live: string[] = []
    for (const reply of ok) {
      const tokens = reply.body.tokens as Tokens
      if ((await profile(app, tokens)).statusCode === 200) live.push(sid(tokens.accessToken))
    }
    t.same(live.sort(), open.map(row => row.id).sort(), 'and only their tokens work')
  })
}

t.test('evict_oldest racing refreshes of the session it picks: two sessions stay open, and only their tokens work', async t => {
  const app = await build(t, { DEVICE_LIMIT: '2', DEVICE_LIMIT_POLICY: 'evict_oldest' })
  for (let round = 0; round < 3; round++) {
    const account = await register(app)
    const phone = await login(app, account.email, 'phone')
    // The registration's session refreshes back to back for as long as the login runs, so one of
    // its refreshes meets the login's transaction, whichever session that one picks.
    const race = { loggingIn: true }
    const issued: Tokens[] = [account.tokens, phone]
    const refreshing = (async () => {
      let current = account.tokens
      while (race.loggingIn) {
        const res = await refresh(app, current.refreshToken)
        if (res.statusCode !== 200) return res.json().code
        current = res.json().tokens
        issued.push(current)
      }
      return 'still open'
    })()
    const tablet = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password, deviceName: 'tablet' } })
    race.loggingIn = false
    const ending = await refreshing
    t.equal(tablet.statusCode, 200)
    issued.push(tablet.json().tokens)
    t.ok(['still open', 'token_revoked'].includes(ending), `the refreshes end as an evicted session's do, or not at all (${ending})`)

    const open = (await openRows(app, account.id)).map(row => row.id).sort()
    t.equal(open.length, 2, 'two sessions open')
    const live = new Set<string>()
    for (const tokens of issued) if ((await profile(app, tokens)).statusCode === 200) live.add(sid(tokens.accessToken))
    t.same([...live].sort(), open, 'every working token belongs to an open session, and each open one has one')
  }
})
