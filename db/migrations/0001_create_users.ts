import { sql, type Kysely } from 'kysely'

export async function up (db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('id', 'uuid', col => col.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('email', 'text', col => col.notNull().unique().check(sql`char_length(email) <= 254 and email = lower(btrim(email))`))
    .addColumn('password_hash', 'text', col => col.notNull())
    .addColumn('name', 'text')
    .addColumn('role', 'text', col => col.notNull().defaultTo('user').check(sql`role in ('user', 'admin')`))
    .addColumn('email_verified_at', 'timestamptz')
    .addColumn('token_version', 'integer', col => col.notNull().defaultTo(0).check(sql`token_version >= 0`))
    .addColumn('disabled_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('last_login_at', 'timestamptz')
    .execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('users').execute()
}
