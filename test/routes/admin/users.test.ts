import { createHmac, randomUUID } from 'node:crypto'
import t from 'tap'
import {
  authed, build, eventually, login, password, realBackends, refresh, register, registerAdmin, testEnv, uniqueEmail, type App, type Tokens
} from '../../helper.js'

const patch = (app: App, tokens: Tokens, id: string, payload: object) => authed(app, tokens.accessToken, { method: 'PATCH', url: `/admin/users/${id}`, payload })
const profile = (app: App, tokens: Tokens) => authed(app, tokens.accessToken, { url: '/profile' })
const loginAs = (app: App, email: string) => app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } })

t.test('admin routes: an admin only, by the fresh state, not by what a token claims', async t => {
  const app = await build(t)
  const user = await register(app)
  const target = await register(app)
  const routes = [
    { method: 'GET' as const, url: '/admin/users' },
    { method: 'PATCH' as const, url: `/admin/users/${target.id}`, payload: { disabled: true } },
    { method: 'GET' as const, url: '/admin/audit-events' }
  ]
  for (const route of routes) {
    const plain = await authed(app, user.tokens.accessToken, route)
    t.equal(plain.statusCode, 403, `${route.method} ${route.url}: a plain user is refused`)
    t.equal(plain.json().code, 'forbidden')
    const anonymous = await app.inject(route)
    t.equal(anonymous.statusCode, 401, `${route.method} ${route.url}: no token`)
    t.equal(anonymous.json().code, 'token_missing')
    t.equal(anonymous.headers['www-authenticate'], 'Bearer realm="latchkey"')
  }

  // Validly signed (the test knows the secret), claiming admin: the role is read from the database's state.
  const [header, payload] = user.tokens.accessToken.split('.')
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
  const forgedPayload = Buffer.from(JSON.stringify({ ...claims, role: 'admin' })).toString('base64url')
  const signature = createHmac('sha256', testEnv().JWT_SECRET as string).update(`${header}.${forgedPayload}`).digest('base64url')
  const forged = `${header}.${forgedPayload}.${signature}`
  t.equal((await profile(app, { ...user.tokens, accessToken: forged })).statusCode, 200, 'the forged token is otherwise valid')
  const res = await authed(app, forged, { url: '/admin/users' })
  t.equal(res.statusCode, 403, 'but claiming admin does not make one')
  t.equal((await authed(app, forged, { method: 'PATCH', url: `/admin/users/${target.id}`, payload: { disabled: true } })).statusCode, 403)
  t.equal((await profile(app, target.tokens)).statusCode, 200, 'and the target was not touched')
})

t.test('promote, demote, disable, enable: the target’s tokens die at once', async t => {
  const app = await build(t)
  const admin = await registerAdmin(app)
  const target = await register(app)

  const promoted = await patch(app, admin.tokens, target.id, { role: 'admin' })
  t.equal(promoted.statusCode, 200)
  t.match(promoted.json(), { id: target.id, email: target.email, role: 'admin', disabled: false })
  t.notOk('passwordHash' in promoted.json() || 'password_hash' in promoted.json(), 'never the hash')
  const old = await profile(app, target.tokens)
  t.equal(old.statusCode, 401, 'the old access token dies at once')
  t.equal(old.json().code, 'token_revoked')
  t.equal((await refresh(app, target.tokens.refreshToken)).json().code, 'token_revoked', 'and the refresh token')
  const asAdmin = (await loginAs(app, target.email)).json()
  t.equal(asAdmin.user.role, 'admin', 'a new login is admin')
  t.equal((await authed(app, asAdmin.tokens.accessToken, { url: '/admin/users' })).statusCode, 200)

  t.equal((await patch(app, admin.tokens, target.id, { role: 'user' })).json().role, 'user')
  t.equal((await authed(app, asAdmin.tokens.accessToken, { url: '/admin/users' })).json().code, 'token_revoked', 'demoted: the admin tokens die')
  const plain = (await loginAs(app, target.email)).json()
  t.equal(plain.user.role, 'user')

  const disabled = await patch(app, admin.tokens, target.id, { disabled: true })
  t.equal(disabled.json().disabled, true)
  const refused = await profile(app, plain.tokens)
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'account_disabled', 'access tokens say why')
  const refreshed = await refresh(app, plain.tokens.refreshToken)
  t.equal(refreshed.statusCode, 400)
  t.equal(refreshed.json().code, 'account_disabled')
  const denied = await loginAs(app, target.email)
  const unknown = await loginAs(app, uniqueEmail('nobody'))
  t.equal(denied.statusCode, 401)
  t.same(denied.json(), unknown.json(), 'login refused exactly as for an unknown email')

  t.equal((await patch(app, admin.tokens, target.id, { disabled: false })).json().disabled, false)
  t.equal((await loginAs(app, target.email)).statusCode, 200, 'enabled: login works again')

  const again = await patch(app, admin.tokens, target.id, { disabled: false, role: 'user' })
  t.equal(again.statusCode, 200, 'a change to what already is, is no change')
  const fresh = (await loginAs(app, target.email)).json().tokens
  await patch(app, admin.tokens, target.id, { disabled: false })
  t.equal((await profile(app, fresh)).statusCode, 200, 'and kills no token')
})

t.test('an admin cannot demote or disable itself; bad requests are 400 or 404, never 500', async t => {
  const app = await build(t)
  const admin = await registerAdmin(app)
  for (const payload of [{ role: 'user' }, { disabled: true }, { role: 'user', disabled: true }]) {
    const res = await patch(app, admin.tokens, admin.id, payload)
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.equal(res.json().code, 'validation_failed')
  }
  t.equal((await profile(app, admin.tokens)).statusCode, 200, 'and its tokens still work')
  t.equal((await patch(app, admin.tokens, admin.id, { role: 'admin' })).statusCode, 200, 'staying admin is fine')

  const unknown = await patch(app, admin.tokens, randomUUID(), { disabled: true })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.json().code, 'not_found')
  const target = await register(app)
  const bad: Array<[string, object]> = [
    ['not-a-uuid', { disabled: true }],
    [target.id, {}],
    [target.id, { role: 'root' }],
    [target.id, { disabled: 'true' }],
    [target.id, { role: 'admin', email: 'x@example.com' }]
  ]
  for (const [id, payload] of bad) {
    const res = await patch(app, admin.tokens, id, payload)
    t.equal(res.statusCode, 400, `${id} ${JSON.stringify(payload)}`)
    t.equal(res.json().code, 'validation_failed')
  }
  t.equal((await profile(app, target.tokens)).statusCode, 200, 'the target was not touched')
})

t.test('GET /admin/users pages newest first, each user exactly once', async t => {
  const app = await build(t)
  const admin = await registerAdmin(app)
  const prefix = `page-${randomUUID().slice(0, 8)}`
  const made: string[] = []
  for (let i = 0; i < 5; i++) made.push((await register(app, `${prefix}-${i}@example.com`)).id)

  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const query: string = `limit=2&email=${prefix.toUpperCase()}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
    const res = await authed(app, admin.tokens.accessToken, { url: `/admin/users?${query}` })
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.ok(body.items.length <= 2)
    for (const item of body.items) {
      t.match(item, { email: new RegExp(`^${prefix}`), role: 'user', disabled: false, emailVerified: false })
      t.type(item.lastLoginAt, 'string', 'registering counts as the first login')
    }
    seen.push(...body.items.map((u: { id: string }) => u.id))
    cursor = body.nextCursor
    pages++
  } while (cursor !== null && pages < 10)
  t.equal(pages, 3, '5 users, 2 a page')
  t.same(seen, [...made].reverse(), 'every user exactly once, newest first')

  const first = (await authed(app, admin.tokens.accessToken, { url: `/admin/users?limit=2&email=${prefix}` })).json()
  const tampered = first.nextCursor.slice(0, 5) + (first.nextCursor[5] === 'A' ? 'B' : 'A') + first.nextCursor.slice(6)
  for (const query of [`cursor=${tampered}`, 'cursor=garbage', 'cursor=a.b', 'limit=0', 'limit=101', 'limit=2x', 'limit=-1', 'sort=email']) {
    const res = await authed(app, admin.tokens.accessToken, { url: `/admin/users?${query}` })
    t.equal(res.statusCode, 400, query)
    t.equal(res.json().code, 'validation_failed')
  }
  const all = (await authed(app, admin.tokens.accessToken, { url: '/admin/users' })).json()
  t.ok(all.items.length >= 1 && all.items.length <= 20, 'the default page is 20 at most')
})

t.test('each change is seen at once by a second instance sharing PostgreSQL and Redis', { skip: realBackends && process.env.REDIS_URL ? false : 'needs DATABASE_URL and REDIS_URL' }, async t => {
  const shared = { CACHE_PREFIX: `latchkey-test-${randomUUID()}:` }
  const a = await build(t, shared)
  const b = await build(t, shared)
  const admin = await registerAdmin(a)
  const target = await register(a)
  const diesOnB = async (tokens: Tokens, code: string) => {
    t.equal((await profile(b, tokens)).statusCode, 200, 'b has the state cached')
    return { code, tokens }
  }

  let live = await diesOnB(target.tokens, 'token_revoked')
  t.equal((await patch(a, admin.tokens, target.id, { role: 'admin' })).statusCode, 200)
  t.ok(await eventually(async () => (await profile(b, live.tokens)).json().code === live.code), 'promotion: refused on b')
  const adminTokens = await login(b, target.email)
  t.equal((await authed(b, adminTokens.accessToken, { url: '/admin/users?limit=1' })).statusCode, 200, 'admin on b')

  live = await diesOnB(adminTokens, 'token_revoked')
  t.equal((await patch(a, admin.tokens, target.id, { role: 'user' })).statusCode, 200)
  t.ok(await eventually(async () => (await profile(b, live.tokens)).json().code === live.code), 'demotion: refused on b')

  live = await diesOnB(await login(b, target.email), 'account_disabled')
  t.equal((await patch(a, admin.tokens, target.id, { disabled: true })).statusCode, 200)
  t.ok(await eventually(async () => (await profile(b, live.tokens)).json().code === live.code), 'disabling: refused on b')
  t.equal((await loginAs(b, target.email)).statusCode, 401, 'and b refuses the login')

  t.equal((await patch(a, admin.tokens, target.id, { disabled: false })).statusCode, 200)
  t.equal((await loginAs(b, target.email)).statusCode, 200, 'enabled: b lets the login through')
})
