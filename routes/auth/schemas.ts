import { Type } from '@sinclair/typebox'
import { DpopHeaders, EmailRef, LabelRef, PasswordRef, TokensRef, UserRef, authFailures, errors } from '../../openapi/components.js'

const strict = { additionalProperties: false } as const
// What Swagger UI fills in for "Try it out": values a person would type, not schema placeholders.
const example = (value: object) => ({ ...strict, examples: [value] })
const jwt = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl'

export const RegisterBody = Type.Object({
  email: EmailRef,
  password: PasswordRef,
  name: Type.Optional(LabelRef)
}, example({ email: 'ada@example.com', password: 'correct horse battery staple', name: 'Ada Lovelace' }))

export const LoginBody = Type.Object({
  email: EmailRef,
  password: PasswordRef,
  deviceName: Type.Optional(LabelRef)
}, example({ email: 'ada@example.com', password: 'correct horse battery staple', deviceName: "Ada's laptop" }))

export const RefreshBody = Type.Object({
  refreshToken: Type.Optional(Type.String({
    minLength: 1,
    maxLength: 4096,
    description: 'Required, unless the request sends `X-Token-Transport: cookie` and the refresh cookie (then send `{}`).'
  }))
}, example({ refreshToken: jwt }))

export const LogoutBody = Type.Object({
  refreshToken: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Authenticates the logout when the access token is gone (in cookie transport, the refresh cookie does).' })),
  scope: Type.Optional(Type.Union([Type.Literal('global'), Type.Literal('local'), Type.Literal('others')], {
    default: 'global',
    description: '`global`: every device; `local`: this session; `others`: every session but this one.'
  }))
}, example({ scope: 'global' }))

/** SPEC §6.1: a browser app asks for its refresh token as an HttpOnly cookie; §8.1: the DPoP proof that binds the session. */
export const TransportHeaders = Type.Object({
  ...DpopHeaders.properties,
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

export const UserWithTokens = Type.Object({ user: UserRef, tokens: TokensRef }, { description: 'The account and the token pair of its new session.', ...setsRefreshCookie })
export const TokensOnly = Type.Object({ tokens: TokensRef }, { description: 'The new token pair (the same one again within REFRESH_REUSE_INTERVAL).', ...setsRefreshCookie })

export const registerResponses = {
  201: UserWithTokens,
  ...errors({ 400: ['weak_password', 'validation_failed', 'dpop_proof_invalid'], 409: ['email_taken', 'device_limit_reached'], 429: ['rate_limited'], 503: ['service_unavailable'] })
}
export const loginResponses = {
  200: UserWithTokens,
  ...errors({ 400: ['validation_failed', 'dpop_proof_invalid'], 401: ['invalid_credentials'], 409: ['device_limit_reached'], 429: ['rate_limited'], 503: ['service_unavailable'] })
}
export const refreshResponses = {
  200: TokensOnly,
  ...errors({
    400: ['token_expired', 'token_invalid', 'token_revoked', 'refresh_reused', 'account_disabled', 'token_binding_mismatch', 'dpop_proof_invalid', 'validation_failed'],
    429: ['rate_limited'],
    503: ['service_unavailable']
  })
}
export const logoutResponses = {
  204: Type.Null({
    description: 'Logged out.',
    headers: { 'set-cookie': { type: 'string', description: 'In cookie transport, unless `scope` is `others`: the refresh cookie, expired.' } }
  }),
  ...errors({ 400: ['validation_failed'], 401: authFailures, 429: ['rate_limited'], 503: ['service_unavailable'] })
}
