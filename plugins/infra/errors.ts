import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

// The closed list of SPEC §12, with the status each code answers by default
// and the sentence a person reads.
export const errorCodes = {
  validation_failed: [400, 'The request is not valid.'],
  invalid_credentials: [401, 'The email or password is incorrect.'],
  email_taken: [409, 'An account with this email already exists.'],
  weak_password: [400, 'The password does not meet the password policy.'],
  token_missing: [401, 'An access token is required.'],
  token_invalid: [401, 'The token is invalid.'],
  token_expired: [401, 'The token has expired.'],
  token_revoked: [401, 'The token has been revoked.'],
  token_binding_mismatch: [401, 'The token was issued to another device.'],
  dpop_proof_invalid: [401, 'The DPoP proof is missing or invalid.'],
  refresh_reused: [400, 'The refresh token was already used; the session has been ended.'],
  otp_invalid: [400, 'The code is invalid or has expired'],
  email_not_verified: [403, 'Verify your email address first.'],
  forbidden: [403, 'You are not allowed to do this.'],
  not_found: [404, 'Not found.'],
  device_limit_reached: [409, 'The limit of signed-in devices has been reached.'],
  account_disabled: [401, 'The account is disabled.'],
  rate_limited: [429, 'Too many requests; try again later.'],
  payload_too_large: [413, 'The request body is too large.'],
  unsupported_media_type: [415, 'The content type is not supported.'],
  request_timeout: [408, 'The request took too long to arrive.'],
  uri_too_long: [414, 'The URL is too long.'],
  headers_too_large: [431, 'The request headers are too large.'],
  service_unavailable: [503, 'The service is unavailable; try again shortly.'],
  internal_error: [500, 'Something went wrong on our side.']
} as const satisfies Record<string, readonly [number, string]>

export type ErrorCode = keyof typeof errorCodes

/** A failure a client caused or should hear about; the error handler turns it into the §12 shape. */
export class AppError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number

  constructor (code: ErrorCode, options: { statusCode?: number, message?: string, cause?: unknown } = {}) {
    super(options.message ?? errorCodes[code][1], { cause: options.cause })
    this.name = 'AppError'
    this.code = code
    this.statusCode = options.statusCode ?? errorCodes[code][0]
  }
}

function errorBody (code: ErrorCode, statusCode: number, message: string) {
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message }
}

// Fastify's own errors that a client causes, and the §12 code each becomes.
const fastifyCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'validation_failed',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'validation_failed',
  FST_ERR_CTP_INVALID_JSON_BODY: 'validation_failed',
  FST_ERR_VALIDATION: 'validation_failed'
}

// Input PostgreSQL refused (a CHECK, bytes it cannot store): the last line
// behind the schemas, and still the client's doing.
const refusedInput = new Set(['23514', '22021', '22P05', '22001'])

// PostgreSQL (or the pool in front of it) is not there: the request can be
// retried shortly, so it is a 503 and not our bug.
const unavailableCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EPIPE', '57P01', '57P03', '08006', '08001', '08003'])

function isUnavailable (err: FastifyError): boolean {
  const code = err.code ?? (err.cause as FastifyError | undefined)?.code
  return (code !== undefined && unavailableCodes.has(code)) ||
    /Connection terminated|timeout exceeded when trying to connect|not queryable|PGlite is closed/i.test(err.message)
}

// RFC 6750 §3 and RFC 9449 §7.1: the scheme the client used (or must use) and why it failed.
function challenge (request: FastifyRequest, code: ErrorCode): string {
  if (code === 'dpop_proof_invalid') return 'DPoP realm="latchkey", error="invalid_dpop_proof"'
  const authorization = request.headers.authorization
  if (authorization === undefined) return 'Bearer realm="latchkey"'
  return /^dpop /i.test(authorization) ? 'DPoP realm="latchkey", error="invalid_token"' : 'Bearer realm="latchkey", error="invalid_token"'
}

function send (reply: FastifyReply, code: ErrorCode, statusCode: number, message: string) {
  reply.errorCode = code
  if (statusCode === 401) reply.header('www-authenticate', challenge(reply.request, code))
  // Every 503 is "come back shortly", whoever raised it.
  if (statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', '5')
  return reply.code(statusCode).send(errorBody(code, statusCode, message))
}

// Longer URLs are refused before routing; Node's own limit (the 16 KiB of
// headers, the request line included) answers 431 beyond it.
const maxUrlLength = 8 * 1024

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (Fastify's
 * `clientErrorHandler`): a timeout, headers too large, bad framing. Answered
 * in the §12 shape when the socket can still take it, then closed.
 */
export function clientErrorHandler (this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const code: ErrorCode = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? 'request_timeout'
    : err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : 'validation_failed'
  const [statusCode] = errorCodes[code]
  const message = code === 'validation_failed' ? 'The request is not valid HTTP.' : errorCodes[code][1]
  this.log.debug({ err, code }, 'client error')
  if (!socket.writable) {
    socket.destroy()
    return
  }
  const body = JSON.stringify(errorBody(code, statusCode, message))
  socket.write(
    `HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    () => socket.destroy()
  )
}

/** Errors Fastify's router raises before a route runs (Fastify's `frameworkErrors`). */
export function frameworkErrors (err: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  reply.header('x-request-id', request.id)
  if (err.code === 'FST_ERR_BAD_URL') return send(reply, 'validation_failed', 400, 'The URL is malformed.')
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') return send(reply, 'uri_too_long', 414, 'A part of the URL is too long.')
  request.log.error({ err }, 'router error')
  return send(reply, 'internal_error', 500, errorCodes.internal_error[1])
}

declare module 'fastify' {
  interface FastifyReply {
    /** The §12 code this reply answered with, when it is an error (for metrics). */
    errorCode: ErrorCode | null
  }
}

export default fp(async (app) => {
  app.decorateReply('errorCode', null)

  // Fastify's own 503 while closing has no code and no Retry-After: this one
  // answers the requests that still arrive on open connections then.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onRequest', async (request, reply) => {
    if (closing) {
      reply.header('retry-after', '5')
      throw new AppError('service_unavailable', { message: 'The server is shutting down; try again shortly.' })
    }
    if (request.url.length > maxUrlLength) throw new AppError('uri_too_long')
  })

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof AppError) {
      return send(reply, err.code, err.statusCode, err.message)
    }
    const mapped = err.code === undefined ? undefined : fastifyCodes[err.code]
    if (mapped === 'validation_failed' && err.validation) {
      return send(reply, mapped, 400, `The request is not valid: ${err.message}.`)
    }
    if (mapped !== undefined) {
      return send(reply, mapped, errorCodes[mapped][0], errorCodes[mapped][1])
    }
    if (err.statusCode === 429) {
      return send(reply, 'rate_limited', 429, errorCodes.rate_limited[1])
    }
    if (err.code !== undefined && refusedInput.has(err.code)) {
      request.log.info({ err }, 'input refused by the database')
      return send(reply, 'validation_failed', 400, errorCodes.validation_failed[1])
    }
    if (isUnavailable(err)) {
      request.log.error({ err }, 'backend unavailable')
      return send(reply, 'service_unavailable', 503, errorCodes.service_unavailable[1])
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      request.log.info({ err }, 'client error')
      return send(reply, 'validation_failed', 400, errorCodes.validation_failed[1])
    }
    request.log.error({ err }, 'unhandled error')
    return send(reply, 'internal_error', 500, errorCodes.internal_error[1])
  })

  app.setNotFoundHandler((request, reply) => {
    return send(reply, 'not_found', 404, `Route ${request.method} ${request.url.split('?')[0]} not found.`)
  })
}, { name: 'errors' })
