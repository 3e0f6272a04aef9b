import { Type } from '@sinclair/typebox'
import { EmailRef, LabelRef, PasswordRef, TokensRef, UserRef, errors } from '../../openapi/components.js'

const strict = { additionalProperties: false } as const

export const RegisterBody = Type.Object({
  email: EmailRef,
  password: PasswordRef,
  name: Type.Optional(LabelRef)
}, strict)

export const LoginBody = Type.Object({
  email: EmailRef,
  password: PasswordRef,
  deviceName: Type.Optional(LabelRef)
}, strict)

export const RefreshBody = Type.Object({ refreshToken: Type.String({ minLength: 1, maxLength: 4096 }) }, strict)

export const LogoutBody = Type.Object({
  refreshToken: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Authenticates the logout when the access token is gone.' })),
  scope: Type.Optional(Type.Union([Type.Literal('global'), Type.Literal('local'), Type.Literal('others')], {
    default: 'global',
    description: '`global`: every device; `local`: this session; `others`: every session but this one.'
  }))
}, strict)

export const UserWithTokens = Type.Object({ user: UserRef, tokens: TokensRef })
export const TokensOnly = Type.Object({ tokens: TokensRef })

export const registerResponses = { 201: UserWithTokens, ...errors(400, 409, 429) }
export const loginResponses = { 200: UserWithTokens, ...errors(400, 401, 409, 429) }
export const refreshResponses = { 200: TokensOnly, ...errors(400, 429) }
export const logoutResponses = { 204: Type.Null({ description: 'Logged out.' }), ...errors(400, 401, 429) }
