import t from 'tap'
import { sql } from 'kysely'
import { authed, build, lastCode, mailedCode, register, registerVerified, startSmtp, uniqueEmail, type App } from '../../helper.js'

const invalid = { statusCode: 400, code: 'otp_invalid', error: 'Bad Request', message: 'The code is invalid or has expired' }

const verify = (app: App, email: string, code: string) =>
  app.inject({ method: 'POST', url: '/auth/email/verify', payload: { email, code } })
const resend = (app: App, email: string) =>
  app.inject({ method: 'POST', url: '/auth/email/resend', payload: { email } })
// Another six digits: never the right code.
const wrong = (code: string, n = 1) => String((Number(code) + n) % 1_000_000).padStart(6, '0')

async function codeRows (app: App, email: string) {
  return app.db.selectFrom('email_codes')
    .innerJoin('users', 'users.id', 'email_codes.user_id')
    .select(['email_codes.code_hash', 'email_codes.attempts', 'email_codes.consumed_at', 'email_codes.voided_at', 'email_codes.expires_at', 'email_codes.created_at'])
    .where('users.email', '=', email)
    .orderBy('email_codes.created_at')
    .execute()
}

t.test('register mails a code; verifying it lets the same access token into verified-only routes', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('verify')
  const account = await register(app, email)

  await app.emailCodes.drain()
  const mails = smtp.to(email)
  t.equal(mails.length, 1, 'one mail, to the new address')
  const [mail] = mails
  t.equal(mail.subject, 'Your latchkey verification code')
  const code = mailedCode(mail)
  t.match(code, /^[0-9]{6}$/)
  t.match(mail.text, /expires in 10 minutes/)
  t.match(mail.text, /did not create a latchkey account/)
  t.match(mail.html, /expires in 10 minutes/)

  const before = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload: { name: 'Ada' } })
  t.equal(before.statusCode, 403)
  t.equal(before.json().code, 'email_not_verified')

  const res = await verify(app, email, code)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { emailVerified: true })

  const after = await authed(app, account.tokens.accessToken, { method: 'PATCH', url: '/profile', payload: { name: 'Ada' } })
  t.equal(after.statusCode, 200, 'the token issued before verification now passes requireVerified')
  t.match(after.json(), { id: account.id, email, name: 'Ada', emailVerified: true })

  const user = await app.db.selectFrom('users').select('email_verified_at').where('id', '=', account.id).executeTakeFirstOrThrow()
  t.type(user.email_verified_at, Date)
  const [row] = await codeRows(app, email)
  t.match(row.code_hash, /^[0-9a-f]{64}$/, 'a hash is stored')
  t.notOk(row.code_hash.includes(code), 'never the code itself')
  t.type(row.consumed_at, Date)
})

t.test('a code works once', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('once')
  await register(app, email)
  const code = await lastCode(app, smtp, email)

  // Spaces and capitals in the address are normalised away.
  t.equal((await verify(app, `  ${email.toUpperCase()} `, code)).statusCode, 200)
  const again = await verify(app, email, code)
  t.equal(again.statusCode, 400)
  t.same(again.json(), invalid)
})

t.test('five wrong tries void the code, even for the right one; four do not', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_RESEND_COOLDOWN: '0' })
  const email = uniqueEmail('attempts')
  const account = await register(app, email)
  const code = await lastCode(app, smtp, email)

  for (let i = 1; i <= 5; i++) {
    const res = await verify(app, email, wrong(code, i))
    t.equal(res.statusCode, 400)
    t.same(res.json(), invalid, `wrong try ${i}`)
  }
  const right = await verify(app, email, code)
  t.equal(right.statusCode, 400, 'the right code no longer works')
  t.same(right.json(), invalid)
  const [row] = await codeRows(app, email)
  t.equal(row.attempts, 5)
  t.type(row.voided_at, Date)
  t.equal((await authed(app, account.tokens.accessToken, { url: '/profile' })).json().emailVerified, false)

  // A new code gets its own five tries: after four wrong ones the right one still works.
  t.equal((await resend(app, email)).statusCode, 202)
  const fresh = await lastCode(app, smtp, email)
  for (let i = 1; i <= 4; i++) t.equal((await verify(app, email, wrong(fresh, i))).statusCode, 400)
  t.equal((await verify(app, email, fresh)).statusCode, 200)
})

t.test('a resend inside the cooldown sends nothing; after it, a new code goes out', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('cooldown')
  await register(app, email)
  const first = await lastCode(app, smtp, email)

  const res = await resend(app, email)
  t.equal(res.statusCode, 202)
  await app.emailCodes.drain()
  t.equal(smtp.to(email).length, 1, "registration's mail started the cooldown: nothing sent")
  t.equal((await codeRows(app, email)).length, 1, 'and no code made')

  // Once the cooldown has passed (moved back in the database), resend mails again.
  await app.db.updateTable('email_codes').set({ created_at: sql<Date>`created_at - interval '61 seconds'` })
    .where('user_id', '=', app.db.selectFrom('users').select('id').where('email', '=', email))
    .execute()
  t.equal((await resend(app, email)).statusCode, 202)
  await app.emailCodes.drain()
  t.equal(smtp.to(email).length, 2)
  t.not(mailedCode(smtp.to(email)[1]), undefined)
  t.ok(first)
})

t.test('a new code voids the old one', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_RESEND_COOLDOWN: '0' })
  const email = uniqueEmail('newcode')
  await register(app, email)
  const old = await lastCode(app, smtp, email)
  let code = old
  // One time in a million the new code equals the old one; ask again then.
  while (code === old) {
    t.equal((await resend(app, email)).statusCode, 202)
    code = await lastCode(app, smtp, email)
  }

  t.same((await verify(app, email, old)).json(), invalid, 'the old code is void')
  t.equal((await verify(app, email, code)).statusCode, 200, 'the new one works')
  const rows = await codeRows(app, email)
  t.type(rows[0].voided_at, Date)
  t.type(rows.at(-1)?.consumed_at, Date)
})

t.test('the daily failure cap holds across new codes, until the window passes', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_RESEND_COOLDOWN: '0', OTP_MAX_ATTEMPTS: '2', OTP_DAILY_FAILURE_LIMIT: '5' })
  const email = uniqueEmail('daily')
  const account = await register(app, email)

  // 2 + 2 + 1 wrong tries over three codes spend the budget of 5.
  for (const tries of [2, 2, 1]) {
    const code = await lastCode(app, smtp, email)
    for (let i = 1; i <= tries; i++) t.same((await verify(app, email, wrong(code, i))).json(), invalid)
    t.equal((await resend(app, email)).statusCode, 202)
  }
  const code = await lastCode(app, smtp, email)
  t.equal(smtp.to(email).length, 4, 'every new code was mailed')
  const refused = await verify(app, email, code)
  t.equal(refused.statusCode, 400, 'the right code of a brand-new code is refused')
  t.same(refused.json(), invalid)

  const failures = () => app.db.selectFrom('email_code_failures').select('created_at').where('user_id', '=', account.id).execute()
  t.equal((await failures()).length, 5, 'refused tries past the cap are not counted again')

  // A day later the budget is back, and the code (still live) works.
  await app.db.updateTable('email_code_failures').set({ created_at: sql<Date>`created_at - interval '25 hours'` })
    .where('user_id', '=', account.id).execute()
  t.equal((await verify(app, email, code)).statusCode, 200)
})

t.test('unknown emails: verify 400 otp_invalid; resend 202 with the same body and no mail', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_RESEND_COOLDOWN: '0' })
  const unknown = uniqueEmail('nobody')

  const res = await verify(app, unknown, '123456')
  t.equal(res.statusCode, 400)
  t.same(res.json(), invalid)

  const pending = uniqueEmail('pending')
  await register(app, pending)
  const verified = uniqueEmail('verified')
  await registerVerified(app, smtp, verified)
  await app.emailCodes.drain()
  const sent = smtp.messages.length

  const forUnknown = await resend(app, unknown)
  const forVerified = await resend(app, verified)
  const forPending = await resend(app, pending)
  for (const r of [forUnknown, forVerified, forPending]) t.equal(r.statusCode, 202)
  t.same(forUnknown.json(), forPending.json(), 'the same body whether the account exists or not')
  t.same(forVerified.json(), forPending.json())
  t.equal(forUnknown.body, forPending.body)

  await app.emailCodes.drain()
  t.equal(smtp.messages.length, sent + 1, 'only the unverified account got a mail')
  t.equal(smtp.to(unknown).length, 0)
  t.equal(smtp.to(verified).length, 1, 'just the registration mail')
  t.equal(smtp.to(pending).length, 2)
})

t.test('two concurrent verifies of one code: exactly one succeeds', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('race')
  await register(app, email)
  const code = await lastCode(app, smtp, email)
  const results = await Promise.all(Array.from({ length: 5 }, () => verify(app, email, code)))
  t.same(results.map(r => r.statusCode).sort(), [200, 400, 400, 400, 400])
})

t.test('with the SMTP server down, registration answers 201 and resend works once it is back', async t => {
  const smtp = await startSmtp(t)
  // The default cooldown: a code that never reached its owner does not hold it.
  const app = await build(t, { SMTP_URL: smtp.url })
  await smtp.stop()
  const email = uniqueEmail('smtpdown')

  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: 'correct horse battery staple' } })
  t.equal(res.statusCode, 201)
  t.match(res.json(), { user: { email, emailVerified: false }, tokens: { tokenType: 'Bearer' } })
  await app.emailCodes.drain()
  t.equal(smtp.messages.length, 0)
  t.equal((await codeRows(app, email)).length, 0, 'the undelivered code was dropped')

  await smtp.start()
  t.equal((await resend(app, email)).statusCode, 202)
  const code = await lastCode(app, smtp, email)
  t.equal((await verify(app, email, code)).statusCode, 200)
})

t.test('invalid bodies are refused with 400 validation_failed', async t => {
  const app = await build(t)
  const email = uniqueEmail('invalid')
  const cases: Array<[string, string, unknown]> = [
    ['verify: code with letters', '/auth/email/verify', { email, code: '12a456' }],
    ['verify: code too short', '/auth/email/verify', { email, code: '12345' }],
    ['verify: code as a number', '/auth/email/verify', { email, code: 123456 }],
    ['verify: no code', '/auth/email/verify', { email }],
    ['verify: unknown property', '/auth/email/verify', { email, code: '123456', extra: true }],
    ['verify: not an email', '/auth/email/verify', { email: 'nope', code: '123456' }],
    ['resend: email in an array', '/auth/email/resend', { email: [email] }],
    ['resend: unknown property', '/auth/email/resend', { email, code: '123456' }],
    ['resend: no body', '/auth/email/resend', undefined]
  ]
  for (const [name, url, payload] of cases) {
    const res = await app.inject({ method: 'POST', url, ...(payload !== undefined && { payload: payload as object }) })
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'validation_failed', name)
  }
})

t.test('rate limits: verify per IP, resend per normalised email', async t => {
  const app = await build(t, {
    RATE_LIMIT_ENABLED: 'true',
    RATE_LIMIT_VERIFY_IP_MAX: '2',
    RATE_LIMIT_MAIL_EMAIL_MAX: '2'
  })
  const email = uniqueEmail('limited')
  for (let i = 0; i < 2; i++) t.equal((await verify(app, email, '123456')).statusCode, 400)
  const limited = await verify(app, uniqueEmail('other'), '123456')
  t.equal(limited.statusCode, 429)
  t.equal(limited.json().code, 'rate_limited')
  t.ok(limited.headers['retry-after'])

  t.equal((await resend(app, email)).statusCode, 202)
  t.equal((await resend(app, ` ${email.toUpperCase()}`)).statusCode, 202)
  const tooMany = await resend(app, email)
  t.equal(tooMany.statusCode, 429)
  t.equal(tooMany.json().code, 'rate_limited')
  t.ok(tooMany.headers['retry-after'])
  t.equal((await resend(app, uniqueEmail('else'))).statusCode, 202, 'another address has its own budget')
})
