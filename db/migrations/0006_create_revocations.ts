import { sql, type Kysely } from 'kysely'

export async function up (db: Kysely<any>): Promise<void> {
  // The revocation feed (SPEC §14.1): token-version bumps and ended sessions,
  // ids and versions only, numbered in commit order.
  await db.schema
    .createTable('revocations')
    .addColumn('seq', 'bigint', col => col.primaryKey())
    .addColumn('kind', 'text', col => col.notNull().check(sql`kind in ('user', 'session')`))
    .addColumn('id', 'uuid', col => col.notNull())
    // The user's new token_version; sessions have none.
    .addColumn('token_version', 'integer', col => col.check(sql`(kind = 'user') = (token_version is not null)`))
    .addColumn('at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('revocations_at_idx').on('revocations').column('at').execute()

  // One row, updated (so locked) by every revocation's transaction: numbers
  // are taken one transaction after the other, so a later commit never gets a
  // smaller one, and a rollback gives its numbers back (no gaps).
  await db.schema
    .createTable('revocation_counter')
    .addColumn('id', 'smallint', col => col.primaryKey().check(sql`id = 1`))
    .addColumn('last', 'bigint', col => col.notNull().check(sql`last >= 0`))
    .execute()
  await db.insertInto('revocation_counter').values({ id: 1, last: 0 }).execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('revocation_counter').execute()
  await db.schema.dropTable('revocations').execute()
}
