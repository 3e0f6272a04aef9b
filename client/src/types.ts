import type { components, paths } from './schema.js'

export type Tokens = components['schemas']['Tokens']
export type User = components['schemas']['User']
/** The body of every latchkey error (SPEC §12). */
export type ErrorBody = components['schemas']['Error']
/** The closed list of error codes (SPEC §12). */
export type ErrorCode = ErrorBody['code']

type JsonBody<Path extends keyof paths> = paths[Path] extends { post: { requestBody?: { content: { 'application/json': infer B } } } } ? B : never

export type RegisterInput = JsonBody<'/auth/register'>
export type LoginInput = JsonBody<'/auth/login'>
export type LogoutScope = NonNullable<JsonBody<'/auth/logout'>['scope']>
