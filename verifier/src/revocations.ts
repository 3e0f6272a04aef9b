import type { RevocationEvent } from './feed.js'

/** What a token's revocation depends on. */
export interface RevocableClaims { sub: string, sid: string, ver: number, iat: number, exp: number }

/**
 * The revocations heard from the feed. An entry is needed only while a token
 * issued before it can still be alive: entries older than the longest
 * lifetime of any token seen are dropped. A token living longer than that
 * (a configuration change) and issued before the last dropped entry cannot
 * be cleared, so it is treated as revoked.
 */
export function createRevocations () {
  /** The lowest `ver` still valid, per user. */
  const users = new Map<string, { version: number, at: number }>()
  /** Ended sessions. */
  const sessions = new Map<string, number>()
  let longestLifetime = 0
  let droppedThrough = 0

  function apply (event: RevocationEvent): void {
    const at = Math.floor((Date.parse(event.at) || Date.now()) / 1000)
    if (event.kind === 'session') {
      sessions.set(event.id, at)
      return
    }
    const known = users.get(event.id)
    if (!known || known.version < (event.tokenVersion as number)) users.set(event.id, { version: event.tokenVersion as number, at })
  }

  function isRevoked (claims: RevocableClaims): boolean {
    const lifetime = claims.exp - claims.iat
    if (lifetime > longestLifetime) {
      if (claims.iat <= droppedThrough) return true
      longestLifetime = lifetime
    }
    if (sessions.has(claims.sid)) return true
    const user = users.get(claims.sub)
    return user !== undefined && claims.ver < user.version
  }

  /** Drops what no live token can depend on any more; `now` in seconds. */
  function prune (now: number, leeway: number): void {
    const before = now - longestLifetime - leeway
    for (const entries of [sessions, users] as Array<Map<string, number | { at: number }>>) {
      for (const [id, entry] of entries) {
        const at = typeof entry === 'number' ? entry : entry.at
        if (at < before) {
          entries.delete(id)
          droppedThrough = Math.max(droppedThrough, at)
        }
      }
    }
  }

  return { apply, isRevoked, prune, get size () { return users.size + sessions.size } }
}
