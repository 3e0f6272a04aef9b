import { Type } from '@sinclair/typebox'
import { EmailRef, PasswordRef, TokensRef, authFailures, errors } from '../../../openapi/components.js'
import { Accepted, Code } from '../email/schemas.js'
import { setsRefreshCookie } from '../schemas.js'

const strict = { additionalProperties: false } as const

export const ForgotBody = Type.Object({ email: EmailRef }, { ...strict, examples: [{ email: 'ada@example.com' }] })
export const ResetBody = Type.Object({ email: EmailRef, code: Code, newPassword: PasswordRef }, {
  ...strict,
  examples: [{ email: 'ada@example.com', code: '042917', newPassword: 'staple battery horse correct' }]
})
export const ChangeBody = Type.Object({ currentPassword: PasswordRef, newPassword: PasswordRef }, {
  ...strict,
  examples: [{ currentPassword: 'correct horse battery staple', newPassword: 'staple battery horse correct' }]
})

export const forgotResponses = { 202: Accepted, ...errors({ 400: ['validation_failed'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
export const resetResponses = { 204: Type.Null({ description: 'The password is changed; every session has ended.' }), ...errors({ 400: ['otp_invalid', 'weak_password', 'validation_failed'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
export const changeResponses = {
  200: Type.Object({ tokens: TokensRef }, { additionalProperties: false, description: 'The password is changed; the new token pair of this session.', ...setsRefreshCookie }),
  ...errors({
    400: ['invalid_credentials', 'weak_password', 'validation_failed'],
    401: authFailures,
    403: ['email_not_verified'],
    429: ['rate_limited'],
    503: ['service_unavailable']
  })
}
