import type { ColumnType, Generated, Insertable, Selectable } from 'kysely'

// Timestamps are read and written as Date; the defaulted ones may be left to the database.
type Timestamp = Date
type NullableTimestamp = ColumnType<Date | null, Date | null | undefined, Date | null>
type DefaultedTimestamp = ColumnType<Date, Date | undefined, Date>

export interface UsersTable {
  id: Generated<string>
  email: string
  password_hash: string
  name: string | null
  role: Generated<'user' | 'admin'>
  email_verified_at: NullableTimestamp
  token_version: Generated<number>
  disabled_at: NullableTimestamp
  created_at: DefaultedTimestamp
  updated_at: DefaultedTimestamp
  last_login_at: NullableTimestamp
}

export interface SessionsTable {
  id: Generated<string>
  user_id: string
  device_name: string | null
  ip: string | null
  user_agent: string | null
  created_at: DefaultedTimestamp
  last_seen_at: DefaultedTimestamp
  expires_at: Timestamp
  revoked_at: NullableTimestamp
  /** The RFC 7638 thumbprint of the DPoP key the session is bound to (SPEC §8.1); null when unbound. */
  dpop_jkt: ColumnType<string | null, string | null | undefined, string | null>
}

export interface RefreshTokensTable {
  jti: string
  session_id: string
  user_id: string
  parent_jti: string | null
  issued_at: DefaultedTimestamp
  expires_at: Timestamp
  rotated_at: NullableTimestamp
  successor_jti: string | null
  revoked_at: NullableTimestamp
}

export interface Database {
  users: UsersTable
  sessions: SessionsTable
  refresh_tokens: RefreshTokensTable
  email_codes: EmailCodesTable
  email_code_failures: EmailCodeFailuresTable
  audit_events: AuditEventsTable
  revocations: RevocationsTable
  revocation_counter: RevocationCounterTable
}

export type User = Selectable<UsersTable>
export type NewUser = Insertable<UsersTable>
export type Session = Selectable<SessionsTable>
export type RefreshTokenRow = Selectable<RefreshTokensTable>

export type EmailCodePurpose = 'verify_email' | 'reset_password'

export interface EmailCodesTable {
  id: Generated<string>
  user_id: string
  purpose: EmailCodePurpose
  /** HMAC-SHA256 of the code, hex; never the code. */
  code_hash: string
  expires_at: Timestamp
  attempts: Generated<number>
  consumed_at: NullableTimestamp
  voided_at: NullableTimestamp
  created_at: DefaultedTimestamp
}

export interface EmailCodeFailuresTable {
  id: Generated<string>
  user_id: string
  purpose: EmailCodePurpose
  created_at: DefaultedTimestamp
}

export type EmailCode = Selectable<EmailCodesTable>

export interface AuditEventsTable {
  /** bigserial: PostgreSQL returns it as a string. */
  id: Generated<string>
  type: string
  at: DefaultedTimestamp
  user_id: string | null
  session_id: string | null
  ip: string | null
  user_agent: string | null
  detail: ColumnType<Record<string, unknown>, string | undefined, string>
}

export type AuditEventRow = Selectable<AuditEventsTable>

// bigint columns: pg reads them as strings (PGlite as numbers); written as numbers.
type BigintColumn = ColumnType<string | number, number, number>

export interface RevocationsTable {
  seq: BigintColumn
  kind: 'user' | 'session'
  id: string
  token_version: number | null
  at: DefaultedTimestamp
}

export interface RevocationCounterTable {
  id: number
  last: BigintColumn
}

export type Revocation = Selectable<RevocationsTable>
