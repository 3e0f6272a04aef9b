import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Kysely } from 'kysely'
import type { Database, RefreshTokenRow, Session, User } from '../../../db/schema.js'
import { bumpTokenVersion, findUserById } from '../../../db/queries/users.js'
import { findSession, insertSession, revokeSessions, touchSession } from '../../../db/queries/sessions.js'
import { findRefreshToken, lockRefreshToken, markRotated } from '../../../db/queries/refresh-tokens.js'
import { AppError, type ErrorCode } from '../../infra/errors.js'
import type { Principal, RefreshClaims } from '../tokens/tokens.js'
import type { Tokens } from '../../../openapi/components.js'

export type LogoutScope = 'global' | 'local' | 'others'

export interface DeviceInfo {
  deviceName?: string
  ip: string
  userAgent?: string
}

const principal = (user: User): Principal => ({
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
function refreshProblem (claims: RefreshClaims, row: RefreshTokenRow | undefined, user: User | undefined, session: Session | undefined): ErrorCode | null {
  if (!row || row.session_id !== claims.sid || row.user_id !== claims.sub) return 'token_invalid'
  if (!user || user.token_version !== claims.ver || !session || session.revoked_at !== null || row.revoked_at !== null) return 'token_revoked'
  if (user.disabled_at !== null) return 'account_disabled'
  return null
}

function createSessions (app: FastifyInstance) {
  const { config, db, tokens, authState } = app

  /** Opens a session for a user who just proved who they are; returns it with its first token pair. */
  async function open (trx: Kysely<Database>, user: User, device: DeviceInfo): Promise<{ session: Session, tokens: Tokens }> {
    const session = await insertSession(trx, {
      userId: user.id,
      deviceName: device.deviceName ?? deviceNameFrom(device.userAgent),
      ip: device.ip,
      userAgent: device.userAgent?.slice(0, 512) ?? null,
      expiresAt: new Date(Date.now() + config.REFRESH_TOKEN_TTL * 1000)
    })
    const issued = await tokens.issue(trx, principal(user), session.id)
    return { session, tokens: issued.tokens }
  }

  /** SPEC §4.3, in one transaction holding the presented token's row lock. */
  async function rotate (token: string): Promise<Tokens> {
    let claims: RefreshClaims
    try {
      claims = tokens.verify(token, 'refresh')
    } catch (err) {
      // Refresh answers RFC 6749's invalid_grant status: the client logs in again.
      throw err instanceof AppError ? new AppError(err.code, { statusCode: 400 }) : err
    }
    const outcome = await db.transaction().execute(async (trx): Promise<{ tokens: Tokens } | { problem: ErrorCode }> => {
      const row = await lockRefreshToken(trx, claims.jti)
      const [user, session] = await Promise.all([findUserById(trx, claims.sub), findSession(trx, claims.sid)])
      const problem = refreshProblem(claims, row, user, session)
      if (problem !== null || !row || !user) return { problem: problem ?? 'token_invalid' }
      const who = principal(user)

      if (!config.ROTATE_REFRESH_TOKENS) {
        await touchSession(trx, claims.sid)
        return { tokens: tokens.pair(who, claims.sid) }
      }
      if (row.rotated_at === null || !config.BLACKLIST_AFTER_ROTATION) {
        // Without blacklisting the old token stays usable, so it gets no place in the chain.
        const parent = config.BLACKLIST_AFTER_ROTATION ? row.jti : null
        const issued = await tokens.issue(trx, who, claims.sid, parent)
        if (parent !== null) await markRotated(trx, row.jti, issued.refresh.jti)
        await touchSession(trx, claims.sid, new Date(issued.refresh.exp * 1000))
        return { tokens: issued.tokens }
      }

      // Already rotated: a second tab racing the first, or a thief.
      const successor = row.successor_jti === null ? undefined : await findRefreshToken(trx, row.successor_jti)
      const recent = row.rotated_at.getTime() + config.REFRESH_REUSE_INTERVAL * 1000 >= Date.now()
      if (recent && successor && successor.rotated_at === null && successor.revoked_at === null) {
        return {
          tokens: tokens.pair(who, claims.sid, {
            jti: successor.jti,
            sessionId: claims.sid,
            iat: successor.issued_at.getTime() / 1000,
            exp: successor.expires_at.getTime() / 1000
          })
        }
      }
      await revokeSessions(trx, user.id, { only: claims.sid })
      return { problem: 'refresh_reused' }
    })

    if ('problem' in outcome) {
      if (outcome.problem === 'refresh_reused') {
        app.log.warn({ userId: claims.sub, sessionId: claims.sid }, 'refresh token reused: session revoked')
        await authState.invalidate({ sessions: [claims.sid] })
      }
      throw new AppError(outcome.problem, { statusCode: 400 })
    }
    return outcome.tokens
  }

  /** A live refresh token's claims, or a 401 AppError saying why not (logout and verify). */
  async function check (token: string): Promise<RefreshClaims> {
    const claims = tokens.verify(token, 'refresh')
    const [row, user, session] = await Promise.all([
      findRefreshToken(db, claims.jti), findUserById(db, claims.sub), findSession(db, claims.sid)
    ])
    const problem = refreshProblem(claims, row, user, session) ??
      (row?.rotated_at !== null && config.BLACKLIST_AFTER_ROTATION ? 'token_revoked' : null)
    if (problem !== null) throw new AppError(problem)
    return claims
  }

  /** Logout (SPEC §6): writes PostgreSQL first, then drops every cached copy. */
  async function end (userId: string, sessionId: string, scope: LogoutScope): Promise<void> {
    const changed = await db.transaction().execute(async trx => {
      if (scope === 'global') await bumpTokenVersion(trx, userId)
      const which = scope === 'local' ? { only: sessionId } : scope === 'others' ? { except: sessionId } : {}
      return await revokeSessions(trx, userId, which)
    })
    await authState.invalidate({ users: scope === 'global' ? [userId] : [], sessions: changed })
  }

  return { open, rotate, check, end }
}

declare module 'fastify' {
  interface FastifyInstance {
    sessions: ReturnType<typeof createSessions>
  }
}

export default fp(async (app) => {
  app.decorate('sessions', createSessions(app))
}, { name: 'sessions', dependencies: ['config', 'db', 'tokens', 'auth-state'] })
