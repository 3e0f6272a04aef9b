import { Type } from '@sinclair/typebox'
import { EmailRef, PasswordRef, TokensRef, errors } from '../../../openapi/components.js'
import { Accepted, Code } from '../email/schemas.js'
import { setsRefreshCookie } from '../schemas.js'

const strict = { additionalProperties: false } as const

export const ForgotBody = Type.Object({ email: EmailRef }, strict)
export const ResetBody = Type.Object({ email: EmailRef, code: Code, newPassword: PasswordRef }, strict)
export const ChangeBody = Type.Object({ currentPassword: PasswordRef, newPassword: PasswordRef }, strict)

export const forgotResponses = { 202: Accepted, ...errors(400, 429) }
export const resetResponses = { 204: Type.Null({ description: 'The password is changed; every session has ended.' }), ...errors(400, 429) }
export const changeResponses = { 200: Type.Object({ tokens: TokensRef }, { additionalProperties: false, ...setsRefreshCookie }), ...errors(400, 401, 403, 429) }
