import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { errorCodes } from '../plugins/infra/errors.js'
import type { User } from '../db/schema.js'

// Shared schemas: registered once with `addSchema`, referenced by `$id`, and
// published as named OpenAPI components so generated clients get real types.

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ minimum: 400, maximum: 599 }),
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
}, { $id: 'User', additionalProperties: false })

export const TokensSchema = Type.Object({
  accessToken: Type.String(),
  refreshToken: Type.Optional(Type.String({ description: 'Absent when refresh rotation is off, and in cookie transport (`X-Token-Transport: cookie`), where it is the `__Host-latchkey-refresh` cookie.' })),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires.' }),
  refreshExpiresIn: Type.Optional(Type.Integer({ description: 'Seconds until the refresh token expires.' }))
}, { $id: 'Tokens', additionalProperties: false })

export type Tokens = Static<typeof TokensSchema>
export type UserView = Static<typeof UserSchema>

export const components: TSchema[] = [ErrorResponse, Email, Password, Label, UserSchema, TokensSchema]

/** The error shape, by reference, for a route's response map. */
export const ErrorRef = Type.Ref(ErrorResponse)
export const EmailRef = Type.Ref(Email)
export const PasswordRef = Type.Ref(Password)
export const LabelRef = Type.Ref(Label)
export const UserRef = Type.Ref(UserSchema)
export const TokensRef = Type.Ref(TokensSchema)

/** `{ 400: ErrorRef, 401: ErrorRef }` for the given statuses. */
export function errors<const S extends number> (...statuses: S[]): Record<S, typeof ErrorRef> {
  return Object.fromEntries(statuses.map(s => [s, ErrorRef])) as Record<S, typeof ErrorRef>
}

/** The public face of a user row: never the hash, never the version. */
export function userView (user: User): UserView {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    role: user.role,
    emailVerified: user.email_verified_at !== null,
    createdAt: user.created_at.toISOString()
  }
}
