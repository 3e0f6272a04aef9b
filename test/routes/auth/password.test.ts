import t from 'tap'
import { authed, build, lastCode, login, password, refresh, register, registerVerified, startSmtp, uniqueEmail, type App } from '../../helper.js'

const newPassword = 'a brand new passphrase'
const invalid = { statusCode: 400, code: 'otp_invalid', error: 'Bad Request', message: 'The code is invalid or has expired' }

const forgot = (app: App, email: string) =>
  app.inject({ method: 'POST', url: '/auth/password/forgot', payload: { email } })
const reset = (app: App, payload: { email: string, code: string, newPassword: string }) =>
  app.inject({ method: 'POST', url: '/auth/password/reset', payload })
const change = (app: App, accessToken: string, payload: { currentPassword: string, newPassword: string }) =>
  authed(app, accessToken, { method: 'POST', url: '/auth/password/change', payload })
const loginWith = (app: App, email: string, pass: string) =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: pass } })
const profile = (app: App, accessToken: string) => authed(app, accessToken, { url: '/profile' })

t.test('forgot: 202 with the same body for known and unknown emails; only the account gets a mail', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('forgot')
  await register(app, email)
  await app.emailCodes.drain()
  const unknown = uniqueEmail('nobody')
  const sent = smtp.messages.length

  const known = await forgot(app, email)
  const nobody = await forgot(app, unknown)
  t.equal(known.statusCode, 202)
  t.equal(nobody.statusCode, 202)
  t.equal(nobody.body, known.body, 'the same body')
  t.match(known.json(), { message: String })

  await app.emailCodes.drain()
  t.equal(smtp.messages.length, sent + 1)
  t.equal(smtp.to(unknown).length, 0, 'no mail for an unknown address')
  const mail = smtp.to(email).at(-1)
  t.equal(mail?.subject, 'Your latchkey password reset code')
  t.match(mail?.text, /did not ask to reset your password/)
  t.match(mail?.text, /expires in 10 minutes/)

  // The cooldown is per purpose: the verification mail did not hold back the reset mail; a second forgot is held.
  t.equal((await forgot(app, email)).statusCode, 202)
  await app.emailCodes.drain()
  t.equal(smtp.to(email).length, 2)
})

t.test('reset: every old token and the old password stop working; the new password logs in', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('reset')
  const first = await register(app, email)
  const second = await login(app, email, 'Second device')
  t.equal((await forgot(app, email)).statusCode, 202)
  const code = await lastCode(app, smtp, email)

  const res = await reset(app, { email, code, newPassword })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')

  for (const tokens of [first.tokens, second]) {
    const api = await profile(app, tokens.accessToken)
    t.equal(api.statusCode, 401)
    t.equal(api.json().code, 'token_revoked')
    const renewed = await refresh(app, tokens.refreshToken)
    t.equal(renewed.statusCode, 400)
    t.equal(renewed.json().code, 'token_revoked')
  }
  const old = await loginWith(app, email, password)
  t.equal(old.statusCode, 401)
  t.equal(old.json().code, 'invalid_credentials')
  const fresh = await loginWith(app, email, newPassword)
  t.equal(fresh.statusCode, 200)
  t.equal(fresh.json().user.emailVerified, true, 'the reset code proved the mailbox')

  const sessions = await app.db.selectFrom('sessions').select('revoked_at').where('user_id', '=', first.id).execute()
  t.equal(sessions.filter(s => s.revoked_at === null).length, 1, 'only the session just opened is live')

  const again = await reset(app, { email, code, newPassword: 'yet another passphrase' })
  t.same(again.json(), invalid, 'the code works once')
})

t.test('reset refuses a weak password without spending the code, and any bad code alike', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('weak')
  const account = await register(app, email)
  await forgot(app, email)
  const code = await lastCode(app, smtp, email)

  const weak = await reset(app, { email, code, newPassword: 'short' })
  t.equal(weak.statusCode, 400)
  t.equal(weak.json().code, 'weak_password')

  const wrongCode = code === '000000' ? '000001' : '000000'
  t.same((await reset(app, { email, code: wrongCode, newPassword })).json(), invalid)
  t.same((await reset(app, { email: uniqueEmail('nobody'), code, newPassword })).json(), invalid)
  // The verification code is not a reset code.
  const verifyCode = await app.db.selectFrom('email_codes').select('purpose').where('user_id', '=', account.id).execute()
  t.same(verifyCode.map(r => r.purpose).sort(), ['reset_password', 'verify_email'])
  t.equal((await profile(app, account.tokens.accessToken)).statusCode, 200, 'nothing changed yet')

  t.equal((await reset(app, { email, code, newPassword })).statusCode, 204, 'the code still works')
})

t.test('change: other sessions die, the caller gets a working new pair, its old pair dies', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('change')
  const caller = await registerVerified(app, smtp, email)
  const other = await login(app, email, 'Other device')

  const res = await change(app, caller.tokens.accessToken, { currentPassword: password, newPassword })
  t.equal(res.statusCode, 200)
  const { tokens } = res.json()
  t.match(tokens, { accessToken: String, refreshToken: String, tokenType: 'Bearer', expiresIn: Number, refreshExpiresIn: Number })

  const mine = await profile(app, tokens.accessToken)
  t.equal(mine.statusCode, 200, 'the new access token works')
  t.equal(mine.json().id, caller.id)
  const sessions = await authed(app, tokens.accessToken, { url: '/sessions' })
  t.equal(sessions.json().sessions.length, 1, 'one session left')
  t.equal(sessions.json().sessions[0].current, true, 'the caller\'s own')

  for (const [name, old] of [['caller', caller.tokens], ['other device', other]] as const) {
    const api = await profile(app, old.accessToken)
    t.equal(api.statusCode, 401, `${name}: old access token refused`)
    t.equal(api.json().code, 'token_revoked')
    const renewed = await refresh(app, old.refreshToken)
    t.equal(renewed.statusCode, 400, `${name}: old refresh token refused`)
    t.equal(renewed.json().code, 'token_revoked')
  }
  const rows = await app.db.selectFrom('refresh_tokens').select(['revoked_at']).where('user_id', '=', caller.id).execute()
  t.equal(rows.filter(r => r.revoked_at === null).length, 1, 'only the new refresh token is outstanding')

  const renewed = await refresh(app, tokens.refreshToken)
  t.equal(renewed.statusCode, 200, 'the new refresh token works')
  t.equal((await profile(app, renewed.json().tokens.accessToken)).statusCode, 200)

  t.equal((await loginWith(app, email, password)).statusCode, 401, 'the old password is gone')
  t.equal((await loginWith(app, email, newPassword)).statusCode, 200, 'the new one logs in')
})

t.test('change refuses a wrong current password with 400 invalid_credentials and changes nothing', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('wrongcurrent')
  const caller = await registerVerified(app, smtp, email)
  const other = await login(app, email)

  const res = await change(app, caller.tokens.accessToken, { currentPassword: 'not the password', newPassword })
  t.equal(res.statusCode, 400)
  t.match(res.json(), { statusCode: 400, code: 'invalid_credentials', error: 'Bad Request' })
  t.notOk(res.headers['www-authenticate'], 'not an authentication failure: the client does not refresh')

  t.equal((await profile(app, caller.tokens.accessToken)).statusCode, 200)
  t.equal((await profile(app, other.accessToken)).statusCode, 200)
  t.equal((await loginWith(app, email, password)).statusCode, 200)

  const weak = await change(app, caller.tokens.accessToken, { currentPassword: password, newPassword: 'short' })
  t.equal(weak.statusCode, 400)
  t.equal(weak.json().code, 'weak_password')
  t.equal((await profile(app, caller.tokens.accessToken)).statusCode, 200)
})

t.test('change needs a verified email and an access token', async t => {
  const app = await build(t)
  const account = await register(app)
  const unverified = await change(app, account.tokens.accessToken, { currentPassword: password, newPassword })
  t.equal(unverified.statusCode, 403)
  t.equal(unverified.json().code, 'email_not_verified')
  t.equal((await loginWith(app, account.email, password)).statusCode, 200, 'the password is unchanged')

  const anonymous = await app.inject({ method: 'POST', url: '/auth/password/change', payload: { currentPassword: password, newPassword } })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().code, 'token_missing')
  const withRefresh = await change(app, account.tokens.refreshToken as string, { currentPassword: password, newPassword })
  t.equal(withRefresh.statusCode, 401, 'a refresh token is no access token')
})

t.test('invalid bodies are refused with 400 validation_failed', async t => {
  const app = await build(t)
  const email = uniqueEmail('invalid')
  const cases: Array<[string, string, object]> = [
    ['forgot: not an email', '/auth/password/forgot', { email: 'nope' }],
    ['forgot: unknown property', '/auth/password/forgot', { email, password }],
    ['reset: no new password', '/auth/password/reset', { email, code: '123456' }],
    ['reset: code not six digits', '/auth/password/reset', { email, code: '1234567', newPassword }],
    ['reset: password as a number', '/auth/password/reset', { email, code: '123456', newPassword: 12345678 }],
    ['reset: unknown property', '/auth/password/reset', { email, code: '123456', newPassword, admin: true }]
  ]
  for (const [name, url, payload] of cases) {
    const res = await app.inject({ method: 'POST', url, payload })
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'validation_failed', name)
  }
})

t.test('rate limits: forgot per normalised email, reset per IP', async t => {
  const app = await build(t, { RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_MAIL_EMAIL_MAX: '1', RATE_LIMIT_VERIFY_IP_MAX: '1' })
  const email = uniqueEmail('limited')
  t.equal((await forgot(app, email)).statusCode, 202)
  const limited = await forgot(app, email.toUpperCase())
  t.equal(limited.statusCode, 429)
  t.equal(limited.json().code, 'rate_limited')
  t.equal((await forgot(app, uniqueEmail('else'))).statusCode, 202)

  t.equal((await reset(app, { email, code: '123456', newPassword })).statusCode, 400)
  const tooMany = await reset(app, { email, code: '123456', newPassword })
  t.equal(tooMany.statusCode, 429)
  t.ok(tooMany.headers['retry-after'])
})
