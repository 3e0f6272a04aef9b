import { sql, type Kysely } from 'kysely'

// The audit trail (SPEC §9.1), and the indexes behind the admin's pages.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('audit_events')
    .addColumn('id', 'bigserial', col => col.primaryKey())
    .addColumn('type', 'text', col => col.notNull())
    .addColumn('at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    // No foreign keys: a failed login names no user, and the trail outlives what it describes.
    .addColumn('user_id', 'uuid')
    .addColumn('session_id', 'uuid')
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('detail', 'jsonb', col => col.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute()
  // GET /admin/audit-events (all, or of one type) and GET /profile/activity, newest first; retention by time.
  await db.schema.createIndex('audit_events_user_idx').on('audit_events').columns(['user_id', 'id desc']).execute()
  await db.schema.createIndex('audit_events_type_idx').on('audit_events').columns(['type', 'id desc']).execute()
  await db.schema.createIndex('audit_events_at_idx').on('audit_events').column('at').execute()
  // GET /admin/users: newest first by (created_at, id), and a prefix filter on the (lower-case) email.
  await db.schema.createIndex('users_created_idx').on('users').columns(['created_at desc', 'id desc']).execute()
  await sql`create index users_email_prefix_idx on users (email text_pattern_ops)`.execute(db)
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('users_email_prefix_idx').execute()
  await db.schema.dropIndex('users_created_idx').execute()
  await db.schema.dropTable('audit_events').execute()
}
