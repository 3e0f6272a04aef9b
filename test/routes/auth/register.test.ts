import t from 'tap'
import { authed, build, password, uniqueEmail } from '../../helper.js'

t.test('register answers 201 with the user and a working token pair', async t => {
  const app = await build(t)
  const email = uniqueEmail()
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: `  ${email.toUpperCase()} `, password, name: 'Ada' } })
  t.equal(res.statusCode, 201)
  const { user, tokens } = res.json()
  t.match(user, { email, name: 'Ada', role: 'user', emailVerified: false })
  t.match(user.id, /^[0-9a-f-]{36}$/)
  t.ok(Date.parse(user.createdAt), 'createdAt is a date')
  t.same(Object.keys(user).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role'], 'no hash, no version')
  t.match(tokens, { tokenType: 'Bearer', expiresIn: 300, refreshExpiresIn: 86400 })

  const profile = await authed(app, tokens.accessToken, { url: '/profile' })
  t.equal(profile.statusCode, 200)
  t.same(profile.json(), user)
  const row = await app.db.selectFrom('users').select(['email', 'password_hash']).where('id', '=', user.id).executeTakeFirstOrThrow()
  t.equal(row.email, email, 'stored trimmed and lower-cased')
  t.match(row.password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/, 'argon2id with OWASP parameters')
  const sessions = (await authed(app, tokens.accessToken, { url: '/sessions' })).json().sessions
  t.equal(sessions.length, 1, 'registration opens a session')
  t.equal(sessions[0].current, true)

  t.test('the same email, in any case, is taken', async t => {
    const again = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: email.toUpperCase(), password } })
    t.equal(again.statusCode, 409)
    t.equal(again.json().code, 'email_taken')
  })
})

t.test('bad input is refused with a code and writes nothing', async t => {
  const app = await build(t)
  const cases: Array<[string, Record<string, unknown>, number, string]> = [
    ['email as an array', { email: ['a@b.co'], password }, 400, 'validation_failed'],
    ['email as a number', { email: 42, password }, 400, 'validation_failed'],
    ['email without @', { email: 'nobody.example.com', password }, 400, 'validation_failed'],
    ['email with a control character', { email: 'a\u0007b@example.com', password }, 400, 'validation_failed'],
    ['email over 254 characters', { email: `${'a'.repeat(250)}@example.com`, password }, 400, 'validation_failed'],
    ['email longer than 254 once lower-cased', { email: `${'İ'.repeat(200)}@example.com`, password }, 400, 'validation_failed'],
    ['missing password', { email: 'x@example.com' }, 400, 'validation_failed'],
    ['password as a number', { email: 'x@example.com', password: 12345678 }, 400, 'validation_failed'],
    ['password too short', { email: 'x@example.com', password: 'short' }, 400, 'weak_password'],
    ['password of spaces', { email: 'x@example.com', password: '          ' }, 400, 'weak_password'],
    ['password over 128 characters', { email: 'x@example.com', password: 'p'.repeat(129) }, 400, 'validation_failed'],
    ['name with a NUL', { email: 'x@example.com', password, name: 'a\u0000b' }, 400, 'validation_failed'],
    ['empty name', { email: 'x@example.com', password, name: '' }, 400, 'validation_failed'],
    ['unknown property', { email: 'x@example.com', password, role: 'admin' }, 400, 'validation_failed']
  ]
  for (const [title, payload, status, code] of cases) {
    const res = await app.inject({ method: 'POST', url: '/auth/register', payload })
    t.equal(res.statusCode, status, title)
    t.equal(res.json().code, code, title)
    t.match(res.json(), { statusCode: status, error: String, message: String }, `${title}: the error shape`)
  }
  const rows = await app.db.selectFrom('users').select('id').where('email', 'in', ['x@example.com', 'nobody.example.com']).execute()
  t.equal(rows.length, 0, 'no account was created')

  const emoji = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: uniqueEmail(), password: '🔑'.repeat(100) } })
  t.equal(emoji.statusCode, 201, '100 emoji are 100 characters, within the 128 allowed')
})
