import { sql, type Kysely } from 'kysely'

export async function up (db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('refresh_tokens')
    .addColumn('jti', 'uuid', col => col.primaryKey())
    .addColumn('session_id', 'uuid', col => col.notNull().references('sessions.id').onDelete('cascade'))
    .addColumn('user_id', 'uuid', col => col.notNull().references('users.id').onDelete('cascade'))
    // A token has at most one child: the database refuses a second branch of a session.
    .addColumn('parent_jti', 'uuid', col => col.unique().references('refresh_tokens.jti').onDelete('set null'))
    .addColumn('issued_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', col => col.notNull())
    .addColumn('rotated_at', 'timestamptz')
    .addColumn('successor_jti', 'uuid')
    .addColumn('revoked_at', 'timestamptz')
    .addCheckConstraint('refresh_tokens_successor_rotated', sql`(successor_jti is null) or (rotated_at is not null)`)
    .execute()
  await db.schema.createIndex('refresh_tokens_session_id_idx').on('refresh_tokens').column('session_id').execute()
  await db.schema.createIndex('refresh_tokens_user_id_idx').on('refresh_tokens').column('user_id').execute()
  await db.schema.createIndex('refresh_tokens_expires_at_idx').on('refresh_tokens').column('expires_at').execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('refresh_tokens').execute()
}
