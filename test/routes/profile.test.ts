import t from 'tap'
import { authed, build, register, registerVerified, startSmtp, uniqueEmail } from '../helper.js'

t.test('PATCH /profile changes the name of a verified account', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('profile')
  const account = await registerVerified(app, smtp, email)

  const res = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload: { name: 'Ada Lovelace' } })
  t.equal(res.statusCode, 200)
  t.same(Object.keys(res.json()).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role'], 'the profile, nothing more')
  t.match(res.json(), { id: account.id, email, name: 'Ada Lovelace', role: 'user', emailVerified: true })
  t.equal((await authed(app, account.tokens.accessToken, { url: '/profile' })).json().name, 'Ada Lovelace', 'kept')

  const cleared = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload: { name: null } })
  t.equal(cleared.statusCode, 200)
  t.equal(cleared.json().name, null, 'null clears the name')
})

t.test('PATCH /profile: 403 until the email is verified, 401 without a token', async t => {
  const app = await build(t)
  const account = await register(app)
  const res = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload: { name: 'Ada' } })
  t.equal(res.statusCode, 403)
  t.same(res.json(), { statusCode: 403, code: 'email_not_verified', error: 'Forbidden', message: 'Verify your email address first.' })
  t.equal((await authed(app, account.tokens.accessToken, { url: '/profile' })).json().name, null, 'unchanged')

  const anonymous = await app.inject({ method: 'PATCH', url: '/profile', payload: { name: 'Ada' } })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().code, 'token_missing')
  t.equal(anonymous.headers['www-authenticate'], 'Bearer realm="latchkey"')
})

t.test('PATCH /profile refuses invalid bodies with 400 validation_failed', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const account = await registerVerified(app, smtp)
  const cases: Array<[string, object]> = [
    ['empty name', { name: '' }],
    ['name too long', { name: 'a'.repeat(101) }],
    ['name as a number', { name: 42 }],
    ['no name', {}],
    ['unknown property', { name: 'Ada', role: 'admin' }],
    ['email cannot be changed here', { name: 'Ada', email: uniqueEmail() }]
  ]
  for (const [name, payload] of cases) {
    const res = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload })
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'validation_failed', name)
  }
  const profile = (await authed(app, account.tokens.accessToken, { url: '/profile' })).json()
  t.match(profile, { name: null, role: 'user' }, 'nothing changed')
})
