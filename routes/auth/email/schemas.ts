import { Type } from '@sinclair/typebox'
import { EmailRef, errors } from '../../../openapi/components.js'

const strict = { additionalProperties: false } as const

export const Code = Type.String({ pattern: '^[0-9]{6}$', description: 'The 6-digit code from the email.', examples: ['042917'] })

/** What resend and forgot answer, the same whether the account exists or not. */
export const Accepted = Type.Object({
  message: Type.String({ description: 'A sentence for people; it never says whether the account exists.' })
}, { additionalProperties: false, description: 'Accepted; a mail goes out if the account needs one.' })

export const VerifyEmailBody = Type.Object({ email: EmailRef, code: Code }, { ...strict, examples: [{ email: 'ada@example.com', code: '042917' }] })
export const ResendBody = Type.Object({ email: EmailRef }, { ...strict, examples: [{ email: 'ada@example.com' }] })

export const verifyResponses = {
  200: Type.Object({ emailVerified: Type.Literal(true) }, { additionalProperties: false, description: 'The email address is confirmed.' }),
  ...errors({ 400: ['otp_invalid', 'validation_failed'], 429: ['rate_limited'], 503: ['service_unavailable'] })
}
export const resendResponses = { 202: Accepted, ...errors({ 400: ['validation_failed'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
