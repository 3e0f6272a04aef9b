import { sql, type Kysely } from 'kysely'

// The RFC 7638 thumbprint of the DPoP key a session is bound to (SPEC §8.1); null = unbound.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('sessions').addColumn('dpop_jkt', 'text', col => col.check(sql`dpop_jkt ~ '^[A-Za-z0-9_-]{43}$'`)).execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('sessions').dropColumn('dpop_jkt').execute()
}
