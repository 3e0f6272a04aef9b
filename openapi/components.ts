import { STATUS_CODES } from 'node:http'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { errorCodes, type ErrorCode } from '../plugins/infra/errors.js'

// Shared schemas: registered once with `addSchema`, referenced by `$id`, and
// published as named OpenAPI components so generated clients get real types.

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status, repeated.', examples: [400] }),
  code: Type.Union(Object.keys(errorCodes).map(code => Type.Literal(code)), { description: 'A code from the closed list of SPEC §12.' }),
  error: Type.String({ description: 'The HTTP reason phrase.' }),
  message: Type.String({ description: 'A sentence for people.' })
}, { $id: 'Error', additionalProperties: false })

// Surrounding spaces are allowed (they are trimmed); control characters are not.
export const Email = Type.String({
  $id: 'Email',
  maxLength: 254,
  pattern: '^\\s*[^\\s@\\x00-\\x1f\\x7f]+@[^\\s@\\x00-\\x1f\\x7f]+\\.[^\\s@\\x00-\\x1f\\x7f]+\\s*$',
  description: 'An email address; stored trimmed and lower-cased.',
  examples: ['ada@example.com']
})

export const Password = Type.String({
  $id: 'Password',
  minLength: 1,
  maxLength: 128,
  description: 'PASSWORD_MIN_LENGTH (default 8) to 128 characters.'
})

// Names people give (themselves, their devices): printable, so PostgreSQL never refuses them.
export const Label = Type.String({
  $id: 'Label',
  minLength: 1,
  maxLength: 100,
  pattern: '^[^\\x00-\\x1f\\x7f]+$',
  description: '1 to 100 characters, no control characters.'
})

export const UserSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin')]),
  emailVerified: Type.Boolean(),
  createdAt: Type.String({ format: 'date-time' })
}, { $id: 'User', additionalProperties: false, description: 'A user account.' })

export const TokensSchema = Type.Object({
  accessToken: Type.String(),
  refreshToken: Type.Optional(Type.String({ description: 'Absent when refresh rotation is off, and in cookie transport (`X-Token-Transport: cookie`), where it is the `__Host-latchkey-refresh` cookie.' })),
  tokenType: Type.Union([Type.Literal('Bearer'), Type.Literal('DPoP')], { description: '`DPoP` when the session is bound to the DPoP key of the proof sent (SPEC §8.1): send the access token as `Authorization: DPoP <token>` with a proof by that key.' }),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires.' }),
  refreshExpiresIn: Type.Optional(Type.Integer({ description: 'Seconds until the refresh token expires.' }))
}, { $id: 'Tokens', additionalProperties: false })

export const AdminUserSchema = Type.Object({
  ...UserSchema.properties,
  disabled: Type.Boolean({ description: 'Disabled accounts cannot log in, and their tokens are refused.' }),
  lastLoginAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'The last successful login; null if never.' })
}, { $id: 'AdminUser', additionalProperties: false, description: 'A user account, as admins see it.' })

export const AuditEventSchema = Type.Object({
  id: Type.String({ description: 'Increasing with the order events were recorded in.', examples: ['42'] }),
  type: Type.String({ description: 'One of the event types of SPEC §9.1, such as `login.failed` or `logout`.', examples: ['login.succeeded'] }),
  at: Type.String({ format: 'date-time' }),
  userId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  sessionId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  detail: Type.Record(Type.String(), Type.Unknown(), { description: 'Small facts about the event (a logout scope, a count of sessions ended); never a secret.' })
}, { $id: 'AuditEvent', additionalProperties: false, description: 'A security-relevant event (SPEC §9.1).' })

export type Tokens = Static<typeof TokensSchema>
export type UserView = Static<typeof UserSchema>
export type AdminUserView = Static<typeof AdminUserSchema>

export const components: TSchema[] = [ErrorResponse, Email, Password, Label, UserSchema, TokensSchema, AdminUserSchema, AuditEventSchema]

/** The error shape, by reference, for a route's response map. */
export const ErrorRef = Type.Ref(ErrorResponse)
export const EmailRef = Type.Ref(Email)
export const PasswordRef = Type.Ref(Password)
export const LabelRef = Type.Ref(Label)
export const UserRef = Type.Ref(UserSchema)
export const TokensRef = Type.Ref(TokensSchema)
export const AdminUserRef = Type.Ref(AdminUserSchema)
export const AuditEventRef = Type.Ref(AuditEventSchema)

/** `limit` and `cursor` of a newest-first list (GET /admin/users and the audit lists). */
export const PageQuery = {
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Items per page, 1 to 100.' }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'The `nextCursor` of the previous page; opaque.' }))
}

/** A page of `item`: `{ items, nextCursor }`, `nextCursor` null on the last page. */
export const PageOf = (item: TSchema, description: string) => Type.Object({
  items: Type.Array(item),
  nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `cursor` for the next page; null on the last page.' })
}, { additionalProperties: false, description })

/** What a protected route answers 401 with: a bad, expired or revoked access token, or a disabled account. */
export const authFailures = ['token_missing', 'token_invalid', 'token_expired', 'token_revoked', 'token_binding_mismatch', 'dpop_proof_invalid', 'account_disabled'] as const

/** How a protected route takes its access token: `Bearer <token>`, or `DPoP <token>` with a proof (SPEC §8.1). */
export const accessTokenSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }, { DPoP: [] }]

/** The DPoP proof (RFC 9449) a route reads: optional, except with a DPoP-bound token (and everywhere under DPOP=required at login). */
export const DpopHeaders = Type.Object({
  dpop: Type.Optional(Type.String({
    description: 'A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, ' +
      'and `ath` (the base64url SHA-256 of the access token) on protected routes.'
  }))
})

type ErrorsByStatus = { [status: number]: readonly ErrorCode[] }

/**
 * A route's error responses, by status, each with the §12 codes it really
 * sends there: `errors({ 400: ['validation_failed'], 429: ['rate_limited'] })`.
 * Each response is the shared Error shape with a description listing its
 * codes and an example of the first, so Swagger UI and generated clients
 * show what can come back.
 */
export function errors<const M extends ErrorsByStatus> (byStatus: M): Record<keyof M, TSchema & { static: Static<typeof ErrorResponse> }> {
  return Object.fromEntries(Object.entries(byStatus).map(([status, codes]) => {
    const statusCode = Number(status)
    const list = codes.map(code => `- \`${code}\`: ${errorCodes[code][1]}`).join('\n')
    // The shape by reference (one `Error` component for clients), the description and example beside it.
    return [status, Type.Unsafe<Static<typeof ErrorResponse>>({
      allOf: [ErrorRef],
      description: `${STATUS_CODES[statusCode]}, with \`code\`:\n${list}`,
      examples: [{ statusCode, code: codes[0], error: STATUS_CODES[statusCode], message: errorCodes[codes[0]][1] }]
    })]
  })) as Record<keyof M, TSchema & { static: Static<typeof ErrorResponse> }>
}
