import t from 'tap'
import { sql } from 'kysely'
import { codeMail, lifetime } from '../../../../plugins/app/accounts/email-codes.js'
import { AppError } from '../../../../plugins/infra/errors.js'
import { build, lastCode, register, startSmtp, uniqueEmail, type App } from '../../../helper.js'

const client = { ip: '127.0.0.1', userAgent: 'email-codes test' }
const userRow = (app: App, email: string) => app.db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirstOrThrow()

t.test('lifetimes read as a person says them', async t => {
  t.equal(lifetime(600), '10 minutes')
  t.equal(lifetime(60), '1 minute')
  t.equal(lifetime(3600), '1 hour')
  t.equal(lifetime(7200), '2 hours')
  t.equal(lifetime(90), '90 seconds')
  t.equal(lifetime(1), '1 second')
})

t.test('the mail: text and HTML carry the code, its lifetime and what to do if it was not you', async t => {
  const mail = codeMail({ email: 'ada@example.com', name: 'Ada <b>&</b>' }, 'verify_email', '004217', 300)
  t.equal(mail.to, 'ada@example.com')
  t.equal(mail.subject, 'Your latchkey verification code')
  t.match(mail.text, /^Hello Ada <b>&<\/b>,\n/)
  t.match(mail.text, /\n {4}004217\n/, 'the code on a line of its own, zero-padded')
  t.match(mail.text, /expires in 5 minutes and works once/)
  t.match(mail.text, /did not create a latchkey account, you can safely ignore this email/)
  t.match(mail.html, />004217</)
  t.match(mail.html, /Hello Ada &#60;b&#62;&#38;&#60;\/b&#62;,/, 'the name is escaped in HTML')
  t.notMatch(mail.html, /<b>/)
  t.match(mail.html, /expires in 5 minutes/)

  const reset = codeMail({ email: 'ada@example.com', name: null }, 'reset_password', '123456', 600)
  t.equal(reset.subject, 'Your latchkey password reset code')
  t.match(reset.text, /^Hello,\n/)
  t.match(reset.text, /reset your password/)
  t.match(reset.text, /did not ask to reset your password/)
})

t.test('send respects the cooldown per account and purpose, and keeps one live code', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_TTL: '5m' })
  const email = uniqueEmail('send')
  await register(app, email)
  const user = await userRow(app, email)

  t.equal(await app.emailCodes.send(user, 'verify_email'), false, 'registration started the cooldown')
  t.equal(await app.emailCodes.send(user, 'reset_password'), true, 'another purpose has its own')
  await app.emailCodes.drain()
  t.equal(smtp.to(email).length, 2)
  t.match(smtp.to(email)[1].text, /expires in 5 minutes/, 'the lifetime follows OTP_TTL')

  const rows = await app.db.selectFrom('email_codes').selectAll().where('user_id', '=', user.id).execute()
  for (const row of rows) {
    t.equal(row.expires_at.getTime() - row.created_at.getTime(), 5 * 60 * 1000)
    t.equal(row.attempts, 0)
  }
  // The database itself refuses a second usable code for the same account and purpose.
  await t.rejects(app.db.insertInto('email_codes').values({
    user_id: user.id, purpose: 'verify_email', code_hash: '0'.repeat(64), expires_at: new Date(Date.now() + 60_000)
  }).execute(), /duplicate key|unique/)
})

t.test('an expired code is refused like a wrong one', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('expired')
  await register(app, email)
  const code = await lastCode(app, smtp, email)
  const user = await userRow(app, email)
  await app.db.updateTable('email_codes').set({ expires_at: sql<Date>`now() - interval '1 second'` }).where('user_id', '=', user.id).execute()

  const err = await app.emailCodes.consume(email, 'verify_email', code, client).catch(e => e)
  t.ok(err instanceof AppError)
  t.equal(err.code, 'otp_invalid')
  t.equal(err.message, 'The code is invalid or has expired')
  t.equal((await userRow(app, email)).email_verified_at, null)
})

t.test('consume runs its work in the same transaction: if the work fails, the code is not spent', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('rollback')
  await register(app, email)
  const code = await lastCode(app, smtp, email)

  await t.rejects(app.emailCodes.consume(email, 'verify_email', code, client, async () => { throw new Error('boom') }), /boom/)
  const { user, result } = await app.emailCodes.consume(email, 'verify_email', code, client, async (_trx, _afterCommit, user) => `done for ${user.email}`)
  t.equal(user.email, email)
  t.equal(result, `done for ${email}`)
  await t.rejects(app.emailCodes.consume(email, 'verify_email', code, client), { code: 'otp_invalid' }, 'and then it is spent')
})

t.test('a failed mail is logged, removes its code, and leaves the cooldown free', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const logged: unknown[][] = []
  const error = app.log.error.bind(app.log)
  app.log.error = ((...args: unknown[]) => { logged.push(args); return error(...(args as [object])) }) as typeof app.log.error
  await smtp.stop()
  const email = uniqueEmail('failed')
  await register(app, email)
  const user = await userRow(app, email)
  await app.emailCodes.drain()

  t.ok(logged.some(args => args[1] === 'email code could not be sent'), 'logged')
  t.equal((await app.db.selectFrom('email_codes').select('id').where('user_id', '=', user.id).execute()).length, 0)
  await smtp.start()
  t.equal(await app.emailCodes.send(user, 'verify_email'), true, 'not held back by the cooldown')
  await app.emailCodes.drain()
  t.equal(smtp.to(email).length, 1)
})

t.test('closing the app waits for mails in flight', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const email = uniqueEmail('close')
  await register(app, email)
  await app.close()
  t.equal(smtp.to(email).length, 1)
})
