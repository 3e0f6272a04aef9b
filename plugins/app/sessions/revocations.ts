import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Transaction } from 'kysely'
import type { Database } from '../../../db/schema.js'
import { lastRevocation, recordRevocations, revocationsAfter, type NewRevocation, type RevocationEvent } from '../../../db/queries/revocations.js'
import type { AfterCommit } from '../../infra/db.js'
import { stateChannel } from './auth-state.js'

export interface Revoked {
  /** Users whose token_version was bumped, with the new version. */
  users?: Array<{ id: string, tokenVersion: number }>
  /** Sessions that ended. */
  sessions?: string[]
}

/** A page of the feed (SPEC §14.1); `reset` when `after` was older than what is kept (or unknown). */
export interface FeedPage {
  events: RevocationEvent[]
  last: number
  reset?: true
}

// Events per page of GET /revocations and per batch of the stream.
export const pageSize = 500
// The stream's buffer of recent events, shared by its subscribers.
const recentMax = 10_000
// While notifications are down, the stream looks for new events this often.
const pollMs = 1000

function createRevocations (app: FastifyInstance) {
  const { db, authState, notifications } = app

  /**
   * Records revocations inside their transaction: the feed's rows (numbered
   * under the counter row's lock), PostgreSQL's notification (delivered at
   * commit), and, after commit, the cached state dropped everywhere.
   * Every token-version bump and every ended session goes through here.
   */
  async function revoked (trx: Transaction<Database>, afterCommit: AfterCommit, what: Revoked): Promise<void> {
    const rows: NewRevocation[] = [
      ...(what.users ?? []).map(u => ({ kind: 'user' as const, id: u.id, tokenVersion: u.tokenVersion })),
      ...(what.sessions ?? []).map(id => ({ kind: 'session' as const, id }))
    ]
    if (rows.length === 0) return
    await recordRevocations(trx, rows)
    const changed = { users: (what.users ?? []).map(u => u.id), sessions: what.sessions ?? [] }
    await authState.announce(trx, changed)
    afterCommit(async () => {
      feed.wake()
      await authState.invalidate(changed, { announced: true })
    })
  }

  /** The revocations after `after` (GET /revocations). */
  async function list (after: number, limit = pageSize): Promise<FeedPage> {
    const { events, counter } = await revocationsAfter(db, after, limit)
    // Numbers are gapless and visible in order: a first event past after + 1,
    // or nothing where the counter says there is, means flushed rows.
    const flushed = events.length > 0 ? events[0].seq > after + 1 : counter > after
    if (after > counter) {
      // A number this database never gave (another database, a restore): from the oldest kept.
      return { ...await list(0, limit), reset: true }
    }
    const last = events.at(-1)?.seq ?? (flushed ? counter : after)
    return { events, last, ...(flushed && { reset: true as const }) }
  }

  const feed = createFeed(app, list)

  /** Other instances' revocations wake the stream's reader (a notification may be about other changes: it only reads). */
  async function listen (): Promise<void> {
    notifications.onReset(() => feed.wake())
    await notifications.on(stateChannel, () => feed.wake())
  }

  return { revoked, list, follow: feed.follow, listen, close: feed.close }
}

// A promise and its resolution, for every subscriber waiting on the next read.
function signal () {
  let resolved!: () => void
  const promise = new Promise<void>(resolve => { resolved = resolve })
  return { promise, resolve: resolved }
}

/**
 * What GET /revocations/stream follows: one reader of the table for all
 * subscribers, woken by the notifications (and by this instance's own
 * commits), keeping the recent events; a subscriber behind them reads its
 * own pages. Each subscriber pulls at its own pace, so a slow one holds
 * nothing but its cursor.
 */
function createFeed (app: FastifyInstance, list: (after: number, limit?: number) => Promise<FeedPage>) {
  let recent: RevocationEvent[] = []
  // The last number read; undefined until the first subscriber, then followed for good.
  let tail: number | undefined
  let reading: Promise<void> | undefined
  let again = false
  let changed = signal()
  const closing = new AbortController()

  async function read (): Promise<void> {
    do {
      again = false
      if (tail === undefined) tail = await lastRevocation(app.db)
      let page: FeedPage
      do {
        page = await list(tail, pageSize)
        if (page.reset) recent = []
        recent.push(...page.events)
        if (recent.length > recentMax) recent = recent.slice(-recentMax)
        tail = Math.max(tail, page.last)
      } while (page.events.length === pageSize)
      const done = changed
      changed = signal()
      done.resolve()
    } while (again)
  }

  /** New events may have committed: read them (once, however many ask meanwhile). */
  function wake (first = false): void {
    if (tail === undefined && !first) return
    if (reading) {
      again = true
      return
    }
    reading = read()
      .catch(err => app.log.warn({ err }, 'revocation feed read failed'))
      .finally(() => { reading = undefined })
  }

  const poller = setInterval(() => { if (!app.notifications.healthy) wake() }, pollMs)
  poller.unref()

  /** The events after `cursor` from the buffer, [] when there are none yet, null when the buffer does not reach back. */
  function buffered (cursor: number): RevocationEvent[] | null {
    if (tail === undefined) return null
    if (cursor >= tail) return []
    const first = recent[0]?.seq
    if (first === undefined || first > cursor + 1) return null
    const start = cursor + 1 - first
    return recent.slice(start, start + pageSize)
  }

  const aborted = (stop: AbortSignal) => new Promise<void>(resolve => {
    if (stop.aborted) resolve()
    stop.addEventListener('abort', () => resolve(), { once: true })
  })

  /** Pages of events after `after`, in order, resets included; ends when `stop` aborts or the app closes. */
  async function * follow (after: number, stop: AbortSignal): AsyncGenerator<FeedPage> {
    const ended = AbortSignal.any([stop, closing.signal])
    const stopped = aborted(ended)
    if (tail === undefined) wake(true)
    let cursor = after
    while (!ended.aborted) {
      const events = buffered(cursor)
      if (events !== null && events.length === 0) {
        await Promise.race([changed.promise, stopped])
        continue
      }
      const page: FeedPage = events === null ? await list(cursor, pageSize) : { events, last: events.at(-1)?.seq ?? cursor }
      if (page.events.length > 0 || page.reset) {
        if (!ended.aborted) yield page
      } else {
        // Nothing new in the table either: the shared reader says when there is.
        await Promise.race([changed.promise, stopped])
      }
      cursor = page.last
    }
  }

  return {
    wake: () => wake(),
    follow,
    close () {
      clearInterval(poller)
      closing.abort()
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    revocations: ReturnType<typeof createRevocations>
  }
}

export default fp(async (app) => {
  const revocations = createRevocations(app)
  await revocations.listen()
  app.decorate('revocations', revocations)
  // Streams end before the server waits for its connections to close.
  app.addHook('preClose', async () => revocations.close())
}, { name: 'revocations', dependencies: ['db', 'auth-state', 'notifications'] })
