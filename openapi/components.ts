import { Type, type TSchema } from '@sinclair/typebox'
import { errorCodes } from '../plugins/app/errors.js'

// Shared schemas: registered once with `addSchema`, referenced by `$id`, and
// published as named OpenAPI components so generated clients get real types.

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ minimum: 400, maximum: 599 }),
  code: Type.Union(Object.keys(errorCodes).map(code => Type.Literal(code)), { description: 'A code from the closed list of SPEC §12.' }),
  error: Type.String({ description: 'The HTTP reason phrase.' }),
  message: Type.String({ description: 'A sentence for people.' })
}, { $id: 'Error', additionalProperties: false })

export const components: TSchema[] = [ErrorResponse]

/** The error shape, by reference, for a route's response map. */
export const ErrorRef = Type.Ref(ErrorResponse)

/** `{ 400: ErrorRef, 401: ErrorRef }` for the given statuses. */
export function errors<const S extends number> (...statuses: S[]): Record<S, typeof ErrorRef> {
  return Object.fromEntries(statuses.map(s => [s, ErrorRef])) as Record<S, typeof ErrorRef>
}
