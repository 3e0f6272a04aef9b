import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { User } from '../../../db/schema.js'
import {
  findUserByEmail, findUserById, insertUser, lockUser, markEmailVerified, setDisabled as writeDisabled,
  setPasswordHash, touchLogin, updateProfile as writeProfile
} from '../../../db/queries/users.js'
import { AppError } from '../../infra/errors.js'
import type { AfterCommit } from '../../infra/db.js'
import { principal, type DeviceInfo } from '../sessions/sessions.js'
import type { Client } from '../sessions/binding.js'
import type { RequestUser } from '../sessions/authenticate.js'
import type { Tokens, UserView } from '../../../openapi/components.js'

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

/**
 * Every write to a user that the authenticate hook reads (version, role,
 * verification, disabling, the profile it serves) and every sign-in. Each runs
 * in one `app.transaction`, takes the user's row before anything of its
 * sessions, and drops the cached state after commit.
 */
function createAccounts (app: FastifyInstance) {
  const { db, transaction, passwords, sessions, emailCodes, authState, log } = app

  const dropCached = (afterCommit: AfterCommit, userId: string) =>
    afterCommit(() => authState.invalidate({ users: [userId] }))

  /** A new account with its first session; the verification code is mailed once it exists. */
  async function register (input: { email: string, password: string, name?: string }, device: DeviceInfo): Promise<{ user: UserView, tokens: Tokens }> {
    // Hashed first: no transaction is held open while argon2 runs.
    const passwordHash = await passwords.hash(input.password)
    const { user, tokens } = await transaction(async (trx, afterCommit) => {
      const user = await insertUser(trx, { email: input.email, password_hash: passwordHash, name: input.name ?? null })
      if (!user) throw new AppError('email_taken')
      const opened = await sessions.open(trx, afterCommit, user, device)
      // Its first session counts toward DEVICE_LIMIT like any other; a new account has no other.
      if ('refused' in opened) throw new AppError(opened.refused)
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
    if (!found || !ok || found.disabled_at !== null) throw new AppError('invalid_credentials')
    const outcome = await transaction(async (trx, afterCommit) => {
      // Under the user's row, which a password reset or change holds while it
      // ends every session: either it comes after this session and ends it, or
      // it came first and the password just checked is no longer the password.
      const user = await lockUser(trx, found.id)
      if (!user || user.password_hash !== found.password_hash || user.disabled_at !== null) throw new AppError('invalid_credentials')
      const opened = await sessions.open(trx, afterCommit, user, device)
      // Refused at DEVICE_LIMIT: committed without a session, and without counting as a login.
      if ('refused' in opened) return opened
      await touchLogin(trx, user.id)
      return { user, ...opened }
    })
    if ('refused' in outcome) throw new AppError(outcome.refused)
    const { user, tokens } = outcome
    return { user: userView(user), tokens }
  }

  /** Confirms the email with its mailed code; takes effect on tokens already issued too. */
  async function verifyEmail (email: string, code: string): Promise<void> {
    await emailCodes.consume(email, 'verify_email', code, async (trx, afterCommit, user) => {
      await markEmailVerified(trx, user.id)
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
      const { version } = await sessions.endAll(trx, afterCommit, caller.id, caller.sessionId)
      return await sessions.renew(trx, { ...principal(locked), tokenVersion: version ?? locked.token_version + 1 }, caller.sessionId, client)
    })
  }

  /** A new password with a mailed reset code: every session ends; the code proves the mailbox, so the email counts as verified. */
  async function resetPassword (email: string, code: string, newPassword: string): Promise<void> {
    // Hashed first: a weak password is refused without spending the code, and no lock is held while argon2 runs.
    const passwordHash = await passwords.hash(newPassword)
    await emailCodes.consume(email, 'reset_password', code, async (trx, afterCommit, user) => {
      await setPasswordHash(trx, user.id, passwordHash)
      await markEmailVerified(trx, user.id)
      await sessions.endAll(trx, afterCommit, user.id)
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

  /** Disabling ends every session and kills every token at once (SPEC §9); enabling lets the person log in again. */
  async function setDisabled (userId: string, disabled: boolean): Promise<void> {
    await transaction(async (trx, afterCommit) => {
      if (!await lockUser(trx, userId)) throw new AppError('not_found', { message: 'No such user.' })
      await writeDisabled(trx, userId, disabled)
      if (disabled) await sessions.endAll(trx, afterCommit, userId)
      else dropCached(afterCommit, userId)
    })
  }

  return { register, signIn, verifyEmail, changePassword, resetPassword, updateProfile, setDisabled }
}

declare module 'fastify' {
  interface FastifyInstance {
    accounts: ReturnType<typeof createAccounts>
  }
}

export default fp(async (app) => {
  app.decorate('accounts', createAccounts(app))
}, { name: 'accounts', dependencies: ['db', 'passwords', 'sessions', 'email-codes', 'auth-state'] })
