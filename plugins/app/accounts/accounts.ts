import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { User } from '../../../db/schema.js'
import {
  findUserByEmail, findUserById, insertUser, listUsers as findUsersPage, lockUser, markEmailVerified, normaliseEmail,
  setDisabled as writeDisabled, setPasswordHash, setRole, touchLogin, updateProfile as writeProfile
} from '../../../db/queries/users.js'
import { cursors, pageOf, type Page } from '../../../db/queries/page.js'
import { AppError } from '../../infra/errors.js'
import type { AfterCommit } from '../../infra/db.js'
import { principal, type DeviceInfo } from '../sessions/sessions.js'
import type { Client } from '../sessions/binding.js'
import type { RequestUser } from '../sessions/authenticate.js'
import type { AdminUserView, Tokens, UserView } from '../../../openapi/components.js'

/** The public face of a user: never the hash, never the version. GET /profile serves it from the cached state. */
export function userView (user: User): UserView {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    role: user.role,
    emailVerified: user.email_verified_at !== null,
    createdAt: user.created_at.toISOString()
  }
}

/** What an admin sees of a user (GET /admin/users, PATCH /admin/users/:id). */
export function adminUserView (user: User): AdminUserView {
  return { ...userView(user), disabled: user.disabled_at !== null, lastLoginAt: user.last_login_at?.toISOString() ?? null }
}

export interface UserChanges {
  role?: User['role']
  disabled?: boolean
}

/**
 * Every write to a user that the authenticate hook reads (version, role,
 * verification, disabling, the profile it serves) and every sign-in. Each runs
 * in one `app.transaction`, takes the user's row before anything of its
 * sessions, records its audit event in that transaction, and drops the cached
 * state after commit.
 */
function createAccounts (app: FastifyInstance) {
  const { db, transaction, passwords, sessions, emailCodes, authState, audit, log } = app
  const pages = cursors(app.keys.derive('page-cursor'))

  const dropCached = (afterCommit: AfterCommit, userId: string) =>
    afterCommit(() => authState.invalidate({ users: [userId] }))

  /** A new account with its first session; the verification code is mailed once it exists. */
  async function register (input: { email: string, password: string, name?: string }, device: DeviceInfo): Promise<{ user: UserView, tokens: Tokens }> {
    // Hashed first: no transaction is held open while argon2 runs.
    const passwordHash = await passwords.hash(input.password)
    const { user, tokens } = await transaction(async (trx, afterCommit) => {
      // Registering opens the first session: it counts as the first login.
      const user = await insertUser(trx, { email: input.email, password_hash: passwordHash, name: input.name ?? null, last_login_at: new Date() })
      if (!user) throw new AppError('email_taken')
      const opened = await sessions.open(trx, afterCommit, user, device)
      // Its first session counts toward DEVICE_LIMIT like any other; a new account has no other.
      if ('refused' in opened) throw new AppError(opened.refused)
      await audit.record(trx, { type: 'user.registered', userId: user.id, sessionId: opened.session.id, client: device })
      return { user, ...opened }
    })
    // The account exists now: a failure to store or mail the code is logged, and resend recovers from it.
    await emailCodes.send(user, 'verify_email')
      .catch(err => log.error({ err, userId: user.id }, 'verification code not sent'))
    return { user: userView(user), tokens }
  }

  /** Email and password → a new session. Unknown, wrong and disabled all answer alike, after the same work. */
  async function signIn (input: { email: string, password: string }, device: DeviceInfo): Promise<{ user: UserView, tokens: Tokens }> {
    const found = await findUserByEmail(db, input.email)
    const ok = await passwords.verify(found?.password_hash, input.password)
    const failed = (reason: 'unknown_email' | 'wrong_password' | 'disabled') => audit.recordAlone({
      type: 'login.failed',
      userId: found?.id ?? null,
      client: device,
      // The address tried is kept only when it matches no account: for the admins, never a user's view.
      detail: found ? { reason } : { reason, email: normaliseEmail(input.email) }
    })
    if (!found || !ok || found.disabled_at !== null) {
      await failed(!found ? 'unknown_email' : !ok ? 'wrong_password' : 'disabled')
      throw new AppError('invalid_credentials')
    }
    // The common login: one statement, if the row is still the one just checked.
    const opened = await sessions.openAtLogin(found, device)
    if (opened) return { user: userView(found), tokens: opened.tokens }
    type Outcome = { failed: 'disabled' | 'wrong_password' } | { refused: 'device_limit_reached' } | { user: User, tokens: Tokens }
    const outcome = await transaction(async (trx, afterCommit): Promise<Outcome> => {
      // Under the user's row, which a password reset or change holds while it
      // ends every session: either it comes after this session and ends it, or
      // it came first and the password just checked is no longer the password.
      const user = await lockUser(trx, found.id)
      if (!user || user.disabled_at !== null) return { failed: 'disabled' }
      if (user.password_hash !== found.password_hash) return { failed: 'wrong_password' }
      const opened = await sessions.open(trx, afterCommit, user, device)
      // Refused at DEVICE_LIMIT: committed with its event, without a session, and without counting as a login.
      if ('refused' in opened) return opened
      await touchLogin(trx, user.id)
      await audit.record(trx, { type: 'login.succeeded', userId: user.id, sessionId: opened.session.id, client: device })
      return { user, tokens: opened.tokens }
    })
    if ('failed' in outcome) {
      await failed(outcome.failed)
      throw new AppError('invalid_credentials')
    }
    if ('refused' in outcome) throw new AppError(outcome.refused)
    return { user: userView(outcome.user), tokens: outcome.tokens }
  }

  /** Confirms the email with its mailed code; takes effect on tokens already issued too. */
  async function verifyEmail (email: string, code: string, client: Client): Promise<void> {
    await emailCodes.consume(email, 'verify_email', code, client, async (trx, afterCommit, user) => {
      await markEmailVerified(trx, user.id)
      await audit.record(trx, { type: 'email.verified', userId: user.id, client })
      dropCached(afterCommit, user.id)
    })
  }

  /**
   * SPEC §5: a new password, every other session ends, every earlier token
   * dies (the caller's too) and the caller's session gets a fresh pair.
   */
  async function changePassword (caller: RequestUser, currentPassword: string, newPassword: string, client: Client): Promise<Tokens> {
    const user = await findUserById(db, caller.id)
    if (!user) throw new AppError('token_revoked')
    if (!await passwords.verify(user.password_hash, currentPassword)) {
      throw new AppError('invalid_credentials', { statusCode: 400, message: 'The current password is incorrect.' })
    }
    const passwordHash = await passwords.hash(newPassword)
    return await transaction(async (trx, afterCommit) => {
      const locked = await lockUser(trx, caller.id)
      // A logout or another change got here first: this token is no longer good for anything.
      if (!locked || locked.token_version !== caller.tokenVersion) throw new AppError('token_revoked')
      await setPasswordHash(trx, caller.id, passwordHash)
      const { version, ended } = await sessions.endAll(trx, afterCommit, caller.id, caller.sessionId)
      await audit.record(trx, { type: 'password.changed', userId: caller.id, sessionId: caller.sessionId, client, detail: { sessionsEnded: ended.length } })
      return await sessions.renew(trx, { ...principal(locked), tokenVersion: version ?? locked.token_version + 1 }, caller.sessionId, client)
    })
  }

  /** A new password with a mailed reset code: every session ends; the code proves the mailbox, so the email counts as verified. */
  async function resetPassword (email: string, code: string, newPassword: string, client: Client): Promise<void> {
    // Hashed first: a weak password is refused without spending the code, and no lock is held while argon2 runs.
    const passwordHash = await passwords.hash(newPassword)
    await emailCodes.consume(email, 'reset_password', code, client, async (trx, afterCommit, user) => {
      await setPasswordHash(trx, user.id, passwordHash)
      await markEmailVerified(trx, user.id)
      const { ended } = await sessions.endAll(trx, afterCommit, user.id)
      await audit.record(trx, { type: 'password.reset', userId: user.id, client, detail: { sessionsEnded: ended.length } })
    })
  }

  /** The caller's name; the cached state carries the profile too. */
  async function updateProfile (userId: string, changes: { name: string | null }): Promise<UserView> {
    return await transaction(async (trx, afterCommit) => {
      const user = await writeProfile(trx, userId, changes)
      if (!user) throw new AppError('token_revoked')
      dropCached(afterCommit, userId)
      return userView(user)
    })
  }

  /**
   * An admin's change to a user (SPEC §9), or the operator's (`by` null, from
   * a script): a role change or disabling bumps the version and ends every
   * session, so the target's tokens die at once on every instance. Both rows
   * are locked in id order, so two admins changing each other queue instead of
   * deadlocking; the admin's own role is read fresh under its lock.
   */
  async function changeUser (by: { id: string } | null, targetId: string, changes: UserChanges, client?: Client): Promise<AdminUserView> {
    if (by !== null && by.id === targetId && (changes.role === 'user' || changes.disabled === true)) {
      throw new AppError('validation_failed', { message: 'An admin cannot demote or disable itself.' })
    }
    return await transaction(async (trx, afterCommit) => {
      const locked = new Map<string, User>()
      for (const id of [...new Set([targetId, ...(by ? [by.id] : [])])].sort()) {
        const row = await lockUser(trx, id)
        if (row) locked.set(id, row)
      }
      const admin = by && locked.get(by.id)
      if (by !== null && (!admin || admin.role !== 'admin' || admin.disabled_at !== null)) throw new AppError('forbidden')
      const target = locked.get(targetId)
      if (!target) throw new AppError('not_found', { message: 'No such user.' })
      const roleChanges = changes.role !== undefined && changes.role !== target.role
      const disabling = changes.disabled === true && target.disabled_at === null
      const enabling = changes.disabled === false && target.disabled_at !== null
      if (!roleChanges && !disabling && !enabling) return adminUserView(target)

      if (roleChanges) await setRole(trx, targetId, changes.role as User['role'])
      if (disabling || enabling) await writeDisabled(trx, targetId, disabling)
      const who = { userId: targetId, client, detail: { by: by?.id ?? 'operator' } }
      if (roleChanges || disabling) {
        const { ended } = await sessions.endAll(trx, afterCommit, targetId)
        if (roleChanges) await audit.record(trx, { ...who, type: 'user.role_changed', detail: { ...who.detail, from: target.role, to: changes.role as string, sessionsEnded: ended.length } })
        if (disabling) await audit.record(trx, { ...who, type: 'user.disabled', detail: { ...who.detail, sessionsEnded: ended.length } })
      } else {
        dropCached(afterCommit, targetId)
      }
      if (enabling) await audit.record(trx, { ...who, type: 'user.enabled' })
      return adminUserView(await findUserById(trx, targetId) as User)
    })
  }

  /**
   * `npm run admin:create`: a new admin whose email counts as verified, or an
   * existing account promoted (its password left as it is). Idempotent.
   */
  async function createAdmin (email: string, password: string): Promise<{ outcome: 'created' | 'promoted' | 'unchanged', user: AdminUserView }> {
    // Hashed first, whatever the account: a weak password is refused on every run, not only the first.
    const passwordHash = await passwords.hash(password)
    const existing = await findUserByEmail(db, email)
    if (existing) {
      if (existing.role === 'admin') return { outcome: 'unchanged', user: adminUserView(existing) }
      return { outcome: 'promoted', user: await changeUser(null, existing.id, { role: 'admin' }) }
    }
    const user = await transaction(async trx => {
      const user = await insertUser(trx, { email, password_hash: passwordHash, name: null, role: 'admin', email_verified_at: new Date() })
      if (user) await audit.record(trx, { type: 'user.registered', userId: user.id, detail: { by: 'operator', role: 'admin' } })
      return user
    })
    // Registered meanwhile by someone else: that account is promoted instead.
    if (!user) return await createAdmin(email, password)
    return { outcome: 'created', user: adminUserView(user) }
  }

  /** GET /admin/users: newest first, keyset-paginated on (created_at, id). */
  async function listUsers (options: { limit: number, cursor?: string, email?: string }): Promise<Page<AdminUserView>> {
    let after: { us: string, id: string } | undefined
    if (options.cursor !== undefined) {
      const position = pages.decode(options.cursor)
      if (typeof position?.us !== 'string' || !/^-?[0-9]{1,19}$/.test(position.us) || typeof position.id !== 'string' || !uuid.test(position.id)) {
        throw new AppError('validation_failed', { message: 'The cursor is not one this list gave out.' })
      }
      after = { us: position.us, id: position.id }
    }
    const rows = await findUsersPage(db, { limit: options.limit + 1, emailPrefix: options.email, after })
    return pageOf(rows, options.limit, adminUserView, row => ({ us: row.created_us, id: row.id }), pages.encode)
  }

  return { register, signIn, verifyEmail, changePassword, resetPassword, updateProfile, changeUser, createAdmin, listUsers }
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

declare module 'fastify' {
  interface FastifyInstance {
    accounts: ReturnType<typeof createAccounts>
  }
}

export default fp(async (app) => {
  app.decorate('accounts', createAccounts(app))
}, { name: 'accounts', dependencies: ['db', 'keys', 'passwords', 'sessions', 'email-codes', 'auth-state', 'audit'] })
