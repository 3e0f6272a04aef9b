import { sql, type Kysely } from 'kysely'

export async function up (db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('email_codes')
    .addColumn('id', 'uuid', col => col.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('user_id', 'uuid', col => col.notNull().references('users.id').onDelete('cascade'))
    .addColumn('purpose', 'text', col => col.notNull().check(sql`purpose in ('verify_email', 'reset_password')`))
    // HMAC-SHA256 of the code under a server key, hex: never the code itself.
    .addColumn('code_hash', 'text', col => col.notNull().check(sql`code_hash ~ '^[0-9a-f]{64}$'`))
    .addColumn('expires_at', 'timestamptz', col => col.notNull())
    .addColumn('attempts', 'integer', col => col.notNull().defaultTo(0).check(sql`attempts >= 0`))
    .addColumn('consumed_at', 'timestamptz')
    // Set when a newer code replaces this one, or when its wrong tries are spent.
    .addColumn('voided_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()
  // At most one usable code per account and purpose: the database refuses a second.
  await db.schema.createIndex('email_codes_live_idx').on('email_codes')
    .columns(['user_id', 'purpose']).unique()
    .where(sql.ref('consumed_at'), 'is', null).where(sql.ref('voided_at'), 'is', null)
    .execute()
  await db.schema.createIndex('email_codes_user_purpose_created_idx').on('email_codes')
    .columns(['user_id', 'purpose', 'created_at'])
    .execute()

  // One row per wrong code, so the daily cap counts a rolling 24 h across codes.
  await db.schema
    .createTable('email_code_failures')
    .addColumn('id', 'bigint', col => col.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('user_id', 'uuid', col => col.notNull().references('users.id').onDelete('cascade'))
    .addColumn('purpose', 'text', col => col.notNull().check(sql`purpose in ('verify_email', 'reset_password')`))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('email_code_failures_user_purpose_created_idx').on('email_code_failures')
    .columns(['user_id', 'purpose', 'created_at'])
    .execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('email_code_failures').execute()
  await db.schema.dropTable('email_codes').execute()
}
