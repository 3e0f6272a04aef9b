import type { ErrorBody, ErrorCode } from './types.js'

/** A failure latchkey answered with (or, for `token_missing`, one the client saw before asking): its §12 `code` says which. */
export class LatchkeyError extends Error {
  readonly code: ErrorCode
  /** The HTTP status; 401 for `token_missing` raised by the client itself. */
  readonly status: number

  constructor (code: ErrorCode, status: number, message: string) {
    super(message)
    this.name = 'LatchkeyError'
    this.code = code
    this.status = status
  }
}

export function isLatchkeyError (err: unknown): err is LatchkeyError {
  return err instanceof LatchkeyError
}

function isErrorBody (body: unknown): body is ErrorBody {
  return typeof body === 'object' && body !== null && typeof (body as ErrorBody).code === 'string' && typeof (body as ErrorBody).message === 'string'
}

/**
 * The error a failed reply stands for. A reply without latchkey's error shape
 * (a proxy's 502 page) still gets a code from the list, by its status.
 */
export function errorFrom (response: Response, body: unknown): LatchkeyError {
  if (isErrorBody(body)) return new LatchkeyError(body.code, response.status, body.message)
  const byStatus: Record<number, ErrorCode> = { 404: 'not_found', 413: 'payload_too_large', 429: 'rate_limited' }
  const code = byStatus[response.status] ?? (response.status >= 500 ? 'service_unavailable' : 'internal_error')
  return new LatchkeyError(code, response.status, `latchkey answered ${response.status} ${response.statusText}`.trim())
}
