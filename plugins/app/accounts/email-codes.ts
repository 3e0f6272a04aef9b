import { createHmac, randomInt, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Transaction } from 'kysely'
import type { Database, EmailCodePurpose, User } from '../../../db/schema.js'
import type { AfterCommit } from '../../infra/db.js'
import { findUserByEmail, lockUser } from '../../../db/queries/users.js'
import {
  countFailuresSince, deleteEmailCode, deleteFailuresBefore, deleteSpentCodes, insertEmailCode, insertFailure,
  lastCodeCreatedAt, lockLiveCode, markConsumed, recordWrongAttempt, voidLiveCodes
} from '../../../db/queries/email-codes.js'
import { AppError } from '../../infra/errors.js'
import type { Mail } from '../../infra/mailer.js'
import type { Client } from '../sessions/binding.js'

const day = 24 * 60 * 60 * 1000

const wording: Record<EmailCodePurpose, { subject: string, intro: string, notYou: string }> = {
  verify_email: {
    subject: 'Your latchkey verification code',
    intro: 'Here is the code to confirm your email address',
    notYou: 'If you did not create a latchkey account, you can safely ignore this email: nothing happens without the code.'
  },
  reset_password: {
    subject: 'Your latchkey password reset code',
    intro: 'Here is the code to reset your password',
    notYou: 'If you did not ask to reset your password, you can safely ignore this email: your password has not changed, and nobody can change it without this code.'
  }
}

// "10 minutes", "1 hour", "90 seconds": the code's lifetime as a person reads it.
export function lifetime (seconds: number): string {
  const [amount, unit] = seconds % 3600 === 0 ? [seconds / 3600, 'hour'] : seconds % 60 === 0 ? [seconds / 60, 'minute'] : [seconds, 'second']
  return `${amount} ${unit}${amount === 1 ? '' : 's'}`
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)

export function codeMail (user: Pick<User, 'email' | 'name'>, purpose: EmailCodePurpose, code: string, ttlSeconds: number): Mail {
  const { subject, intro, notYou } = wording[purpose]
  const greeting = user.name ? `Hello ${user.name},` : 'Hello,'
  const validity = `It expires in ${lifetime(ttlSeconds)} and works once. Asking for a new code makes this one stop working.`
  const never = 'Never share this code: latchkey will never ask you for it.'
  const text = [greeting, '', `${intro}:`, '', `    ${code}`, '', validity, '', notYou, '', never, '', '-- latchkey', ''].join('\n')
  const p = 'margin:0 0 16px;font:16px/1.5 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1f2328'
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head>
<body style="margin:0;padding:24px;background:#f6f8fa">
<div style="max-width:480px;margin:0 auto;padding:32px;background:#ffffff;border-radius:8px">
<p style="${p}">${escapeHtml(greeting)}</p>
<p style="${p}">${escapeHtml(intro)}:</p>
<p style="margin:0 0 16px;padding:16px;text-align:center;background:#f6f8fa;border-radius:6px;font:bold 32px/1.2 ui-monospace,Menlo,Consolas,monospace;letter-spacing:8px;color:#1f2328">${code}</p>
<p style="${p}">${escapeHtml(validity)}</p>
<p style="${p}">${escapeHtml(notYou)}</p>
<p style="${p};color:#57606a;font-size:14px">${escapeHtml(never)}</p>
<p style="${p};color:#57606a;font-size:14px">&mdash; latchkey</p>
</div>
</body></html>
`
  return { to: user.email, subject, text, html }
}

type Outcome<T> = { ok: true, user: User, result: T } | { ok: false }

function createEmailCodes (app: FastifyInstance) {
  const { config, db, mailer, log, transaction, keys, audit } = app
  // A key of its own, derived from APP_SECRET: a stolen table cannot be brute-forced offline,
  // and rotating the token-signing key leaves the codes in flight working.
  const key = keys.derive('email-codes')
  // The user and the purpose are in the message, so a hash is worthless on any other row.
  const digest = (userId: string, purpose: EmailCodePurpose, code: string) =>
    createHmac('sha256', key).update(`${purpose}:${userId}:${code}`).digest()
  const deliveries = new Set<Promise<void>>()

  async function deliver (user: User, purpose: EmailCodePurpose, code: string, id: string) {
    try {
      await mailer.send(codeMail(user, purpose, code, config.OTP_TTL))
      log.info({ userId: user.id, purpose }, 'email code sent')
    } catch (err) {
      log.error({ err, userId: user.id, purpose }, 'email code could not be sent')
      // It never reached its owner: it neither works nor holds the cooldown, so a resend goes out at once.
      await deleteEmailCode(db, id).catch(err => log.warn({ err }, 'undelivered email code not removed'))
    }
  }

  /**
   * Mails a fresh code unless the cooldown since the last one is running;
   * voids the previous code. Resolves once the code is stored: the mail goes
   * out in the background, so the reply takes no longer for an existing
   * account than for an unknown one, and a dead SMTP server fails nothing.
   */
  async function send (user: User, purpose: EmailCodePurpose): Promise<boolean> {
    const code = String(randomInt(0, 1_000_000)).padStart(6, '0')
    const created = await transaction(async trx => {
      // Concurrent sends for one account queue here: one mail per cooldown, one live code.
      if (!await lockUser(trx, user.id)) return undefined
      const now = new Date()
      const last = await lastCodeCreatedAt(trx, user.id, purpose)
      if (last && now.getTime() - last.getTime() < config.OTP_RESEND_COOLDOWN * 1000) return undefined
      await voidLiveCodes(trx, user.id, purpose, now)
      const keep = Math.max(day, config.OTP_RESEND_COOLDOWN * 1000, config.OTP_TTL * 1000)
      await deleteSpentCodes(trx, user.id, purpose, new Date(now.getTime() - keep))
      return await insertEmailCode(trx, {
        userId: user.id,
        purpose,
        codeHash: digest(user.id, purpose, code).toString('hex'),
        createdAt: now,
        expiresAt: new Date(now.getTime() + config.OTP_TTL * 1000)
      })
    })
    if (!created) return false
    const delivery = deliver(user, purpose, code, created.id)
    deliveries.add(delivery)
    delivery.finally(() => deliveries.delete(delivery))
    return true
  }

  /**
   * Checks a code and uses it up, running `then` in the same transaction. The
   * user's row, then the code's, stay locked throughout (the lock order every
   * account write follows), so of two concurrent checks at most one succeeds.
   * Every failure is the same 400 `otp_invalid`; the wrong guess that locks
   * the code (OTP_MAX_ATTEMPTS) or the account's codes for the day
   * (OTP_DAILY_FAILURE_LIMIT) is recorded as `otp.locked`.
   */
  async function consume<T = void> (
    email: string,
    purpose: EmailCodePurpose,
    code: string,
    client: Client,
    then?: (trx: Transaction<Database>, afterCommit: AfterCommit, user: User) => Promise<T>
  ): Promise<{ user: User, result: T }> {
    const found = await findUserByEmail(db, email)
    if (!found) throw new AppError('otp_invalid')
    const outcome = await transaction(async (trx, afterCommit): Promise<Outcome<T>> => {
      const user = await lockUser(trx, found.id)
      if (!user) return { ok: false }
      const row = await lockLiveCode(trx, user.id, purpose)
      if (!row) return { ok: false }
      const now = new Date()
      const windowStart = new Date(now.getTime() - day)
      // Past the daily budget every code is refused, the right one too.
      const failures = await countFailuresSince(trx, user.id, purpose, windowStart)
      if (failures >= config.OTP_DAILY_FAILURE_LIMIT) return { ok: false }
      if (row.expires_at.getTime() <= now.getTime()) return { ok: false }
      if (!timingSafeEqual(Buffer.from(row.code_hash, 'hex'), digest(user.id, purpose, code))) {
        const attempts = await recordWrongAttempt(trx, row.id, config.OTP_MAX_ATTEMPTS, now)
        await insertFailure(trx, user.id, purpose, now)
        await deleteFailuresBefore(trx, user.id, purpose, windowStart)
        const locked = failures + 1 >= config.OTP_DAILY_FAILURE_LIMIT ? 'daily_failures' : attempts >= config.OTP_MAX_ATTEMPTS ? 'attempts' : undefined
        if (locked !== undefined) await audit.record(trx, { type: 'otp.locked', userId: user.id, client, detail: { purpose, reason: locked } })
        return { ok: false }
      }
      await markConsumed(trx, row.id, now)
      return { ok: true, user, result: then ? await then(trx, afterCommit, user) : undefined as T }
    })
    if (!outcome.ok) throw new AppError('otp_invalid')
    return { user: outcome.user, result: outcome.result }
  }

  // Forgot and resend reply before anything is looked up, so the reply is the
  // same work for a known and an unknown email; the lookup and the mail run
  // here afterwards, a few at a time, from a bounded backlog.
  const backlog: Array<{ email: string, purpose: EmailCodePurpose }> = []
  const maxBacklog = 1000
  const maxRunning = 2
  const running = new Set<Promise<void>>()

  async function mailIfNeeded ({ email, purpose }: { email: string, purpose: EmailCodePurpose }) {
    const user = await findUserByEmail(db, email)
    if (!user || user.disabled_at !== null) return
    if (purpose === 'verify_email' && user.email_verified_at !== null) return
    await send(user, purpose)
  }

  function pump () {
    while (running.size < maxRunning && backlog.length > 0) {
      const job = mailIfNeeded(backlog.shift() as typeof backlog[number])
        .catch(err => log.error({ err }, 'email code request failed'))
        .finally(() => {
          running.delete(job)
          pump()
        })
      running.add(job)
    }
  }

  /**
   * Queues "mail a code to this address if its account needs one"; returns at
   * once. The work starts on a later turn of the event loop, after the reply
   * is on its way. A full backlog drops the request (logged): the reply is the
   * same, and the per-email rate limit keeps honest clients far below it.
   */
  function request (email: string, purpose: EmailCodePurpose): void {
    if (backlog.length >= maxBacklog) {
      log.warn({ purpose }, 'email code backlog full: request dropped')
      return
    }
    backlog.push({ email, purpose })
    setImmediate(pump)
  }

  /** Waits for the queued requests and the mails in flight (shutdown; tests counting what was sent). */
  async function drain (): Promise<void> {
    while (backlog.length > 0 || running.size > 0 || deliveries.size > 0) {
      pump()
      await Promise.allSettled([...running, ...deliveries])
    }
  }

  return { send, request, consume, drain }
}

declare module 'fastify' {
  interface FastifyInstance {
    emailCodes: ReturnType<typeof createEmailCodes>
  }
}

export default fp(async (app) => {
  const emailCodes = createEmailCodes(app)
  app.decorate('emailCodes', emailCodes)
  // Runs before the mailer and the database close (onClose hooks run last-registered first).
  app.addHook('onClose', async () => { await emailCodes.drain() })
}, { name: 'email-codes', dependencies: ['config', 'db', 'mailer', 'keys', 'audit'] })
