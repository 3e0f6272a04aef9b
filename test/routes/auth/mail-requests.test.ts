import t from 'tap'
import { sql } from 'kysely'
import { build, register, startSmtp, uniqueEmail, type App } from '../../helper.js'

// SPEC §12: forgot (routes/auth/password) and resend (routes/auth/email) are no
// oracle for which emails have accounts.

const forgot = (app: App, email: string) =>
  app.inject({ method: 'POST', url: '/auth/password/forgot', payload: { email } })

t.test('forgot and resend reply before any lookup: the same path for known and unknown emails (no timing oracle)', async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_RESEND_COOLDOWN: '0' })
  const known = uniqueEmail('oracle')
  await register(app, known)
  await app.emailCodes.drain()
  const unknown = uniqueEmail('oracle-nobody')
  const sent = smtp.messages.length

  const replies = await app.db.transaction().execute(async trx => {
    // While this transaction holds the users table, no lookup of an email can
    // finish: a route that looked the account up before replying would hang here.
    await sql`lock table users in access exclusive mode`.execute(trx)
    const replies = []
    for (const email of [known, unknown]) {
      replies.push(await forgot(app, email))
      replies.push(await app.inject({ method: 'POST', url: '/auth/email/resend', payload: { email } }))
    }
    t.equal(smtp.messages.length, sent, 'nothing was looked up or mailed before the replies')
    return replies
  })
  t.same(replies.map(r => r.statusCode), [202, 202, 202, 202])
  t.equal(replies[0].body, replies[2].body, 'forgot: the same body for known and unknown')
  t.equal(replies[1].body, replies[3].body, 'resend: the same body for known and unknown')

  await app.emailCodes.drain()
  t.same(smtp.to(known).slice(-2).map(m => m.subject).sort(), ['Your latchkey password reset code', 'Your latchkey verification code'],
    'after the replies, the known account got its two mails')
  t.equal(smtp.to(unknown).length, 0, 'the unknown address none')
})
