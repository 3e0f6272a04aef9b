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

export const RefreshBody = Type.Object({
  refreshToken: Type.Optional(Type.String({
    minLength: 1,
    maxLength: 4096,
    description: 'Required, unless the request sends `X-Token-Transport: cookie` and the refresh cookie (then send `{}`).'
  }))
}, strict)

export const LogoutBody = Type.Object({
  refreshToken: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Authenticates the logout when the access token is gone (in cookie transport, the refresh cookie does).' })),
  scope: Type.Optional(Type.Union([Type.Literal('global'), Type.Literal('local'), Type.Literal('others')], {
    default: 'global',
    description: '`global`: every device; `local`: this session; `others`: every session but this one.'
  }))
}, strict)

/** SPEC §6.1: a browser app asks for its refresh token as an HttpOnly cookie. */
export const TransportHeaders = Type.Object({
  'x-token-transport': Type.Optional(Type.Literal('cookie', {
    description: 'With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, ' +
      'never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence).'
  }))
})

export const setsRefreshCookie = {
  headers: {
    'set-cookie': {
      type: 'string',
      description: 'In cookie transport: `__Host-latchkey-refresh=<refresh token>; Max-Age=<its remaining lifetime>; Path=/; HttpOnly; Secure; SameSite=Strict`.'
    }
  }
}

export const UserWithTokens = Type.Object({ user: UserRef, tokens: TokensRef }, setsRefreshCookie)
export const TokensOnly = Type.Object({ tokens: TokensRef }, setsRefreshCookie)

export const registerResponses = { 201: UserWithTokens, ...errors(400, 409, 429) }
export const loginResponses = { 200: UserWithTokens, ...errors(400, 401, 409, 429) }
export const refreshResponses = { 200: TokensOnly, ...errors(400, 429) }
export const logoutResponses = {
  204: Type.Null({
    description: 'Logged out.',
    headers: { 'set-cookie': { type: 'string', description: 'In cookie transport, unless `scope` is `others`: the refresh cookie, expired.' } }
  }),
  ...errors(400, 401, 429)
}
