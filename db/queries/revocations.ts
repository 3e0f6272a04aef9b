import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database } from '../schema.js'

export interface NewRevocation {
  kind: 'user' | 'session'
  id: string
  /** The user's new token_version (kind `user` only). */
  tokenVersion?: number
}

export interface RevocationEvent {
  seq: number
  kind: 'user' | 'session'
  id: string
  tokenVersion?: number
  at: Date
}

/**
 * Numbers the revocations from the counter row, which the update holds until
 * the transaction ends, and records them; returns the last number taken.
 */
export async function recordRevocations (trx: Transaction<Database>, revocations: NewRevocation[]): Promise<number> {
  const { last } = await trx.updateTable('revocation_counter')
    .set({ last: sql<number>`last + ${revocations.length}` })
    .where('id', '=', 1)
    .returning('last')
    .executeTakeFirstOrThrow()
  const first = Number(last) - revocations.length + 1
  const at = new Date()
  await trx.insertInto('revocations').values(revocations.map((r, i) => ({
    seq: first + i, kind: r.kind, id: r.id, token_version: r.tokenVersion ?? null, at
  }))).execute()
  return Number(last)
}

/**
 * Up to `limit` revocations numbered after `after`, and the counter, read in
 * one statement (one snapshot): what the counter says was committed is what
 * the rows show, unless the rows were flushed.
 */
export async function revocationsAfter (db: Kysely<Database>, after: number, limit: number): Promise<{ events: RevocationEvent[], counter: number }> {
  const { rows } = await sql<{ seq: string | number | null, kind: 'user' | 'session' | null, id: string | null, token_version: number | null, at: Date | string | null, counter: string | number }>`
    select r.seq, r.kind, r.id, r.token_version, r.at, c.last as counter
    from revocation_counter c
    left join lateral (select * from revocations where seq > ${after} order by seq limit ${limit}) r on true
    where c.id = 1
    order by r.seq`.execute(db)
  const events = rows.filter(r => r.seq !== null).map(r => ({
    seq: Number(r.seq),
    kind: r.kind as 'user' | 'session',
    id: r.id as string,
    ...(r.token_version !== null && { tokenVersion: r.token_version }),
    at: new Date(r.at as Date | string)
  }))
  return { events, counter: Number(rows[0]?.counter ?? 0) }
}

/** Deletes the revocations recorded before `before`, oldest first, in batches. */
export async function deleteRevocationsBefore (db: Kysely<Database>, before: Date, batchSize: number): Promise<number> {
  let total = 0
  let deleted: number
  do {
    const result = await db.deleteFrom('revocations')
      .where('seq', 'in', db.selectFrom('revocations').select('seq').where('at', '<', before).orderBy('seq').limit(batchSize))
      .executeTakeFirst()
    deleted = Number(result.numDeletedRows)
    total += deleted
  } while (deleted === batchSize)
  return total
}

/** The last number taken: every revocation up to it has committed. */
export async function lastRevocation (db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom('revocation_counter').select('last').where('id', '=', 1).executeTakeFirstOrThrow()
  return Number(row.last)
}
