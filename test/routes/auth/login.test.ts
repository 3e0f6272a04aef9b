import t from 'tap'
import { build, password, register, uniqueEmail } from '../../helper.js'

t.test('POST /auth/login', async t => {
  const app = await build(t)
  const login = (email: string, pass: string) => app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: pass } })

  t.test('unknown email, wrong password and a disabled account get the same answer', async t => {
    const active = await register(app)
    const disabled = await register(app)
    await app.db.updateTable('users').set({ disabled_at: new Date() }).where('id', '=', disabled.id).execute()
    const lastLogin = async () => (await app.db.selectFrom('users').select('last_login_at').where('id', '=', disabled.id).executeTakeFirstOrThrow()).last_login_at
    const registeredAt = await lastLogin()

    const cases = [
      { name: 'unknown email', res: await login(uniqueEmail('nobody'), password) },
      { name: 'wrong password', res: await login(active.email, 'not the password') },
      { name: 'disabled account, right password', res: await login(disabled.email, password) },
      { name: 'disabled account, wrong password', res: await login(disabled.email, 'not the password') }
    ]
    const [first] = cases
    t.same(first.res.json(), { statusCode: 401, code: 'invalid_credentials', error: 'Unauthorized', message: 'The email or password is incorrect.' })
    for (const { name, res } of cases) {
      t.equal(res.statusCode, 401, `${name}: 401`)
      t.equal(res.body, first.res.body, `${name}: the same body, byte for byte`)
      t.equal(res.headers['www-authenticate'], first.res.headers['www-authenticate'], `${name}: the same challenge`)
      t.equal(res.headers['content-type'], first.res.headers['content-type'], `${name}: the same content type`)
    }

    t.test('and nothing was opened for them', async t => {
      for (const account of [active, disabled]) {
        const sessions = await app.db.selectFrom('sessions').select('id').where('user_id', '=', account.id).execute()
        t.equal(sessions.length, 1, 'only the session registration opened')
      }
      t.same(await lastLogin(), registeredAt, "the disabled account's last login (its registration) is not touched")
    })

    t.test('the right password on the active account works (the control)', async t => {
      const res = await login(active.email, password)
      t.equal(res.statusCode, 200)
      t.equal(res.json().user.id, active.id)
      t.type(res.json().tokens.accessToken, 'string')
    })
  })

  t.test('the email is matched normalised', async t => {
    const account = await register(app)
    const res = await login(`  ${account.email.toUpperCase()} `, password)
    t.equal(res.statusCode, 200)
    t.equal(res.json().user.email, account.email)
  })
})
