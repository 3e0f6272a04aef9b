import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Transaction } from 'kysely'
import type { Database, RefreshTokenRow, Session, User } from '../../../db/schema.js'
import { bumpTokenVersion, findUserById, lockUser } from '../../../db/queries/users.js'
import {
  bindSessionKey, findSession, insertSession, listActiveSessions, lockOpenSessions, lockSession, openLoginSession, revokeSessions, touchSession,
  type Liveness, type NewSession
} from '../../../db/queries/sessions.js'
import { findRefreshToken, markRotated, revokeSessionRefreshTokens } from '../../../db/queries/refresh-tokens.js'
import { AppError, type ErrorCode } from '../../infra/errors.js'
import type { AfterCommit } from '../../infra/db.js'
import type { Principal, RefreshClaims, TokenSession } from '../tokens/tokens.js'
import type { Client } from './binding.js'
import { eventRow } from '../audit/audit.js'
import type { Tokens } from '../../../openapi/components.js'

export type LogoutScope = 'global' | 'local' | 'others'

export interface DeviceInfo extends Client {
  deviceName?: string
  /** The thumbprint of the DPoP key the new session is bound to (SPEC §8.1). */
  dpopJkt?: string
}

export const principal = (user: User): Principal => ({
  id: user.id,
  role: user.role,
  emailVerified: user.email_verified_at !== null,
  tokenVersion: user.token_version
})

// "Firefox on Linux" from a User-Agent, for people reading their session list.
function deviceNameFrom (userAgent: string | undefined): string | null {
  if (!userAgent) return null
  const browser = [['Edg/', 'Edge'], ['OPR/', 'Opera'], ['Firefox/', 'Firefox'], ['Chrome/', 'Chrome'], ['Safari/', 'Safari']]
    .find(([token]) => userAgent.includes(token))?.[1]
  const os = [['Android', 'Android'], ['iPhone', 'iOS'], ['iPad', 'iPadOS'], ['Windows', 'Windows'], ['Mac OS X', 'macOS'], ['Linux', 'Linux']]
    .find(([token]) => userAgent.includes(token))?.[1]
  if (browser && os) return `${browser} on ${os}`
  return (browser ?? os ?? userAgent.split(/[ /]/)[0]).slice(0, 100) || null
}

/**
 * Why a refresh token may not be used, or null when it may. One rule for
 * refresh, logout and verify, read from the rows (locked, where it matters).
 */
function refreshProblem (claims: RefreshClaims, row: RefreshTokenRow | undefined, user: User | undefined, session: Session | undefined, ended: boolean): ErrorCode | null {
  if (!row || row.session_id !== claims.sid || row.user_id !== claims.sub) return 'token_invalid'
  // Before the rest, as the authenticate hook does: disabling also ended the session.
  if (user && user.disabled_at !== null) return 'account_disabled'
  if (!user || user.token_version !== claims.ver || !session || session.revoked_at !== null || ended || row.revoked_at !== null) return 'token_revoked'
  return null
}

const byLeastRecentlySeen = (a: Session, b: Session) =>
  a.last_seen_at.getTime() - b.last_seen_at.getTime() || a.created_at.getTime() - b.created_at.getTime()

function createSessions (app: FastifyInstance) {
  const { config, db, tokens, revocations, transaction, binding, audit } = app

  /** The end of the session's maximum lifetime (SPEC §8): no rotation extends it, no token outlives it. */
  const maxEnd = (session: Pick<Session, 'created_at'>) => session.created_at.getTime() + config.SESSION_MAX_LIFETIME * 1000

  /** When the session ends unless it is refreshed: its last refresh token expires, its maximum lifetime passes, or it idles out. */
  function endOf (session: Session): Date {
    const ends = [session.expires_at.getTime(), maxEnd(session)]
    if (config.SESSION_IDLE_TIMEOUT > 0) ends.push(session.last_seen_at.getTime() + config.SESSION_IDLE_TIMEOUT * 1000)
    return new Date(Math.min(...ends))
  }
  const ended = (session: Session | undefined) => session !== undefined && endOf(session).getTime() <= Date.now()

  /** What an active session is, as of now: the same lifetimes as endOf, as a query's bounds. */
  function liveness (): Liveness {
    const now = Date.now()
    return {
      createdAfter: new Date(now - config.SESSION_MAX_LIFETIME * 1000),
      ...(config.SESSION_IDLE_TIMEOUT > 0 && { seenAfter: new Date(now - config.SESSION_IDLE_TIMEOUT * 1000) })
    }
  }

  /** What the tokens of a session issued to this client carry: its end, and their binding. */
  const tokenSession = (session: Pick<Session, 'id' | 'created_at' | 'dpop_jkt'>, client: Client): TokenSession =>
    ({ id: session.id, endsAt: Math.floor(maxEnd(session) / 1000), bnd: binding.of(client), ...(session.dpop_jkt !== null && { jkt: session.dpop_jkt }) })

  /** A new session's row: opened now, from this device. */
  function newSession (userId: string, device: DeviceInfo): NewSession {
    const now = Date.now()
    return {
      userId,
      deviceName: device.deviceName ?? deviceNameFrom(device.userAgent),
      ip: device.ip,
      userAgent: device.userAgent?.slice(0, 512) ?? null,
      createdAt: new Date(now),
      expiresAt: new Date(now + Math.min(config.REFRESH_TOKEN_TTL, config.SESSION_MAX_LIFETIME) * 1000),
      dpopJkt: device.dpopJkt ?? null
    }
  }

  /**
   * DEVICE_LIMIT under `evict_oldest`: these sessions end to make room, each
   * under its row, and their tokens die at once on every instance.
   */
  async function evict (trx: Transaction<Database>, afterCommit: AfterCommit, userId: string, sessionIds: string[], client: Client): Promise<void> {
    const evicted: string[] = []
    for (const id of [...sessionIds].sort()) {
      await lockSession(trx, id)
      evicted.push(...await revokeSessions(trx, userId, { only: id }))
    }
    // One event per session ended, naming it; the login that made room is the request.
    for (const sessionId of evicted) {
      await audit.record(trx, { type: 'session.evicted', userId, sessionId, client, detail: { policy: 'evict_oldest', limit: config.DEVICE_LIMIT } })
    }
    await revocations.revoked(trx, afterCommit, { sessions: evicted })
    afterCommit(() => app.log.info({ userId, sessionIds: evicted }, 'sessions evicted at the device limit'))
  }

  /**
   * Opens a session for a user who just proved who they are, inside the
   * caller's transaction; returns it with its first token pair. At
   * DEVICE_LIMIT, `reject` opens nothing and returns the refusal instead of
   * throwing it, so that the caller's transaction can still commit what it
   * records of the refusal (SPEC §9.1); `evict_oldest` ends the least recently
   * seen sessions first.
   */
  async function open (trx: Transaction<Database>, afterCommit: AfterCommit, user: User, device: DeviceInfo): Promise<{ session: Session, tokens: Tokens } | { refused: 'device_limit_reached' }> {
    if (config.DEVICE_LIMIT > 0) {
      // Under the user's row: concurrent logins of one account count one after the other, never past the limit.
      await lockUser(trx, user.id)
      const active = await listActiveSessions(trx, user.id, liveness())
      const excess = active.length + 1 - config.DEVICE_LIMIT
      if (excess > 0 && config.DEVICE_LIMIT_POLICY === 'reject') {
        app.log.info({ userId: user.id }, 'login refused at the device limit')
        await audit.record(trx, { type: 'login.device_limit_refused', userId: user.id, client: device, detail: { limit: config.DEVICE_LIMIT, active: active.length } })
        return { refused: 'device_limit_reached' }
      }
      if (excess > 0) await evict(trx, afterCommit, user.id, active.sort(byLeastRecentlySeen).slice(0, excess).map(s => s.id), device)
    }
    const session = await insertSession(trx, newSession(user.id, device))
    const issued = await tokens.issue(trx, principal(user), tokenSession(session, device))
    return { session, tokens: issued.tokens }
  }

  /**
   * `open` for a login when no DEVICE_LIMIT applies, in one statement with the
   * login's other writes (`openLoginSession`), so that the common login is one
   * round trip after its password check (SPEC §16). Undefined, with nothing
   * written, when there is a limit to count or the user's row changed since
   * `checked` was read: the caller then takes the transaction and `open`.
   */
  async function openAtLogin (checked: User, device: DeviceInfo): Promise<{ session: Session, tokens: Tokens } | undefined> {
    if (config.DEVICE_LIMIT > 0) return undefined
    const values = { id: randomUUID(), ...newSession(checked.id, device) }
    const issuing = tokenSession({ id: values.id, created_at: values.createdAt, dpop_jkt: values.dpopJkt }, device)
    const refresh = tokens.mint(issuing)
    const session = await openLoginSession(db, checked, values, refresh, eventRow({ type: 'login.succeeded', client: device }))
    return session && { session, tokens: tokens.pair(principal(checked), issuing, refresh) }
  }

  /**
   * SPEC §4.3, in one transaction holding the session's row: every refresh,
   * theft revocation, logout and password change of the session queues on it,
   * so a stale token and the current one presented together are decided one
   * after the other and the theft always sees (and revokes) any successor.
   */
  async function rotate (token: string, client: Client, dpopJkt?: string): Promise<Tokens> {
    let claims: RefreshClaims
    try {
      claims = tokens.verify(token, 'refresh')
    } catch (err) {
      // Refresh answers RFC 6749's invalid_grant status: the client logs in again.
      throw err instanceof AppError ? new AppError(err.code, { statusCode: 400 }) : err
    }
    // Before anything is read or written: a token from another device never yields one.
    await binding.enforce('refresh', claims, client, 400)
    const outcome = await transaction(async (trx, afterCommit): Promise<{ tokens: Tokens } | { problem: ErrorCode }> => {
      const session = await lockSession(trx, claims.sid)
      const [row, user] = await Promise.all([findRefreshToken(trx, claims.jti), findUserById(trx, claims.sub)])
      const problem = refreshProblem(claims, row, user, session, ended(session))
      if (problem !== null || !row || !user || !session) return { problem: problem ?? 'token_invalid' }
      // SPEC §8.1: a bound session refreshes only with a proof by its key (a
      // thief without it cannot even end the session); a proof binds an unbound one.
      if (session.dpop_jkt !== null && session.dpop_jkt !== dpopJkt) return { problem: 'dpop_proof_invalid' }
      if (session.dpop_jkt === null && dpopJkt !== undefined) await bindSessionKey(trx, session.id, dpopJkt)
      const who = principal(user)
      // The new access token is bound to where this refresh comes from (a phone on a new network).
      const issuing = tokenSession({ ...session, dpop_jkt: session.dpop_jkt ?? dpopJkt ?? null }, client)

      if (!config.ROTATE_REFRESH_TOKENS) {
        await touchSession(trx, claims.sid)
        return { tokens: tokens.pair(who, issuing) }
      }
      if (row.rotated_at === null || !config.BLACKLIST_AFTER_ROTATION) {
        // Without blacklisting the old token stays usable, so it gets no place in the chain.
        const parent = config.BLACKLIST_AFTER_ROTATION ? row.jti : null
        const issued = await tokens.issue(trx, who, issuing, parent)
        if (parent !== null) await markRotated(trx, row.jti, issued.refresh.jti)
        await touchSession(trx, claims.sid, new Date(issued.refresh.exp * 1000))
        return { tokens: issued.tokens }
      }

      // Already rotated: a second tab racing the first, or a thief.
      const successor = row.successor_jti === null ? undefined : await findRefreshToken(trx, row.successor_jti)
      const recent = row.rotated_at.getTime() + config.REFRESH_REUSE_INTERVAL * 1000 >= Date.now()
      if (recent && successor && successor.rotated_at === null && successor.revoked_at === null) {
        return {
          tokens: tokens.pair(who, issuing, {
            jti: successor.jti,
            sessionId: claims.sid,
            iat: successor.issued_at.getTime() / 1000,
            exp: successor.expires_at.getTime() / 1000
          })
        }
      }
      await revocations.revoked(trx, afterCommit, { sessions: await revokeSessions(trx, user.id, { only: claims.sid }) })
      await audit.record(trx, { type: 'refresh.reuse_detected', userId: user.id, sessionId: claims.sid, client, detail: { recent } })
      afterCommit(() => app.log.warn({ userId: claims.sub, sessionId: claims.sid }, 'refresh token reused: session revoked'))
      return { problem: 'refresh_reused' }
    })
    if ('problem' in outcome) throw new AppError(outcome.problem, { statusCode: 400 })
    return outcome.tokens
  }

  /** A live refresh token's claims, or a 401 AppError saying why not (logout and verify). */
  async function check (token: string): Promise<RefreshClaims> {
    const claims = tokens.verify(token, 'refresh')
    const [row, user, session] = await Promise.all([
      findRefreshToken(db, claims.jti), findUserById(db, claims.sub), findSession(db, claims.sid)
    ])
    const problem = refreshProblem(claims, row, user, session, ended(session)) ??
      (row?.rotated_at !== null && config.BLACKLIST_AFTER_ROTATION ? 'token_revoked' : null)
    if (problem !== null) throw new AppError(problem)
    return claims
  }

  /**
   * Every token of the user dies (`token_version` += 1) and every session
   * ends but `keep`, inside the caller's transaction: the user's row, then the
   * sessions' rows, then their tokens. Global logout, password change and
   * reset, disabling.
   */
  async function endAll (trx: Transaction<Database>, afterCommit: AfterCommit, userId: string, keep?: string): Promise<{ version: number | undefined, ended: string[] }> {
    const version = await bumpTokenVersion(trx, userId)
    await lockOpenSessions(trx, userId)
    const ended = await revokeSessions(trx, userId, keep === undefined ? {} : { except: keep })
    await revocations.revoked(trx, afterCommit, { users: version === undefined ? [] : [{ id: userId, tokenVersion: version }], sessions: ended })
    return { version, ended }
  }

  /**
   * A fresh token pair for a session whose earlier refresh tokens all die,
   * inside the caller's transaction (password change); 401 `token_revoked`
   * when the session ended meanwhile.
   */
  async function renew (trx: Transaction<Database>, who: Principal, sessionId: string, client: Client): Promise<Tokens> {
    const session = await lockSession(trx, sessionId)
    if (!session || session.user_id !== who.id || session.revoked_at !== null || ended(session)) throw new AppError('token_revoked')
    await revokeSessionRefreshTokens(trx, sessionId)
    const issued = await tokens.issue(trx, who, tokenSession(session, client))
    // The session lives as long as its new refresh token, as after a refresh.
    await touchSession(trx, sessionId, new Date(issued.refresh.exp * 1000))
    return issued.tokens
  }

  /** Logout (SPEC §6): writes PostgreSQL first, then drops every cached copy. One event, counting the sessions ended. */
  async function end (userId: string, sessionId: string, scope: LogoutScope, client: Client): Promise<void> {
    await transaction(async (trx, afterCommit) => {
      let ended: string[]
      if (scope === 'global') {
        ended = (await endAll(trx, afterCommit, userId)).ended
      } else {
        await lockUser(trx, userId)
        if (scope === 'local') await lockSession(trx, sessionId)
        else await lockOpenSessions(trx, userId)
        ended = await revokeSessions(trx, userId, scope === 'local' ? { only: sessionId } : { except: sessionId })
        await revocations.revoked(trx, afterCommit, { sessions: ended })
      }
      await audit.record(trx, { type: 'logout', userId, sessionId, client, detail: { scope, sessionsEnded: ended.length } })
    })
  }

  /** Ends one of the user's open sessions (DELETE /sessions/:id); 404 for any other. */
  async function revoke (userId: string, sessionId: string, client: Client): Promise<void> {
    await transaction(async (trx, afterCommit) => {
      await lockUser(trx, userId)
      const session = await lockSession(trx, sessionId)
      // Someone else's session is as unknown to the caller as one that never existed.
      if (!session || session.user_id !== userId || session.revoked_at !== null) throw new AppError('not_found', { message: 'No such session.' })
      const ended = await revokeSessions(trx, userId, { only: sessionId })
      await audit.record(trx, { type: 'session.revoked', userId, sessionId, client })
      await revocations.revoked(trx, afterCommit, { sessions: ended })
    })
  }

  /** The user's active sessions (GET /sessions), newest first, each with when it ends unless refreshed. */
  async function list (userId: string): Promise<Array<Session & { endsAt: Date }>> {
    const sessions = await listActiveSessions(db, userId, liveness())
    return sessions.map(session => ({ ...session, endsAt: endOf(session) }))
  }

  return { open, openAtLogin, rotate, check, endAll, renew, end, revoke, list }
}

declare module 'fastify' {
  interface FastifyInstance {
    sessions: ReturnType<typeof createSessions>
  }
}

export default fp(async (app) => {
  app.decorate('sessions', createSessions(app))
}, { name: 'sessions', dependencies: ['config', 'db', 'tokens', 'revocations', 'binding', 'audit'] })
