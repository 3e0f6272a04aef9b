import net, { type AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import { AppError, errorCodes } from '../../../plugins/infra/errors.js'
import { apiHeaders } from '../../../plugins/external/helmet.js'
import { build } from '../../helper.js'

const pick = (headers: Record<string, unknown>, names: string[]) => Object.fromEntries(names.map(name => [name, headers[name]]))

/** The app plus a few routes of its own, registered before it is ready, as a route folder would. */
async function appWithRoutes (t: Test) {
  const app = await build(t)
  app.post('/test/echo', {
    schema: {
      body: Type.Object({ email: Type.String(), count: Type.Optional(Type.Integer()) }, { additionalProperties: false })
    }
  }, async request => request.body)
  app.get('/test/crash', async () => {
    throw new Error('relation "secret_table" does not exist at /srv/app/db.ts:42')
  })
  app.get('/test/revoked', async () => {
    throw new AppError('token_revoked')
  })
  return app
}

/** Every error body is exactly { statusCode, code, error, message }, message a sentence. */
function errorShape (t: Test, body: Record<string, unknown>, statusCode: number, code: string) {
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'exactly the four fields')
  t.equal(body.statusCode, statusCode)
  t.equal(body.code, code)
  t.type(body.error, 'string')
  t.ok(typeof body.message === 'string' && body.message.length > 0, 'a message for people')
}

t.test('the closed list of codes is the one SPEC §12 documents', async t => {
  t.same(Object.keys(errorCodes).sort(), [
    'validation_failed', 'invalid_credentials', 'email_taken', 'weak_password', 'token_missing',
    'token_invalid', 'token_expired', 'token_revoked', 'token_binding_mismatch', 'dpop_proof_invalid', 'refresh_reused',
    'otp_invalid', 'email_not_verified', 'forbidden', 'not_found', 'device_limit_reached',
    'account_disabled', 'rate_limited', 'payload_too_large', 'unsupported_media_type',
    'request_timeout', 'uri_too_long', 'headers_too_large', 'service_unavailable', 'internal_error'
  ].sort())
})

t.test('an unknown route is 404 not_found', async t => {
  const app = await appWithRoutes(t)
  const res = await app.inject({ url: '/no/such/route?x=1' })
  t.equal(res.statusCode, 404)
  t.match(res.headers['content-type'], /application\/json/)
  errorShape(t, res.json(), 404, 'not_found')
  t.equal(res.json().error, 'Not Found')
})

t.test('a body over 16 KiB is 413 payload_too_large', async t => {
  const app = await appWithRoutes(t)
  const res = await app.inject({ method: 'POST', url: '/test/echo', payload: { email: 'a'.repeat(17 * 1024) } })
  t.equal(res.statusCode, 413)
  errorShape(t, res.json(), 413, 'payload_too_large')
  const fits = await app.inject({ method: 'POST', url: '/test/echo', payload: { email: 'a'.repeat(15 * 1024) } })
  t.equal(fits.statusCode, 200, 'a body under the limit is accepted')
})

t.test('malformed JSON is 400 validation_failed', async t => {
  const app = await appWithRoutes(t)
  for (const payload of ['{"email": ', '{email: "a@b.c"}', '']) {
    const res = await app.inject({ method: 'POST', url: '/test/echo', headers: { 'content-type': 'application/json' }, payload })
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    errorShape(t, res.json(), 400, 'validation_failed')
  }
})

t.test('a content type other than JSON is 415 unsupported_media_type', async t => {
  const app = await appWithRoutes(t)
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const res = await app.inject({ method: 'POST', url: '/test/echo', headers: { 'content-type': type }, payload: 'email=a@b.c' })
    t.equal(res.statusCode, 415, type)
    errorShape(t, res.json(), 415, 'unsupported_media_type')
  }
})

t.test('bodies are validated as sent, never coerced', async t => {
  const app = await appWithRoutes(t)
  const invalid: Array<[string, unknown]> = [
    ['an array for a string', { email: ['a@b.c'] }],
    ['a number for a string', { email: 42 }],
    ['a string for an integer', { email: 'a@b.c', count: '1' }],
    ['null for a string', { email: null }],
    ['a missing property', {}],
    ['an unknown property', { email: 'a@b.c', admin: true }],
    ['not an object', ['a@b.c']]
  ]
  for (const [name, payload] of invalid) {
    const res = await app.inject({ method: 'POST', url: '/test/echo', payload: payload as object })
    t.equal(res.statusCode, 400, name)
    errorShape(t, res.json(), 400, 'validation_failed')
  }
  const ok = await app.inject({ method: 'POST', url: '/test/echo', payload: { email: 'a@b.c', count: 1 } })
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { email: 'a@b.c', count: 1 })
})

t.test('an unexpected error is 500 internal_error, with no internals in the reply', async t => {
  const app = await appWithRoutes(t)
  const res = await app.inject({ url: '/test/crash' })
  t.equal(res.statusCode, 500)
  errorShape(t, res.json(), 500, 'internal_error')
  t.notMatch(res.body, /secret_table|\/srv\/app|db\.ts|stack/, 'nothing from the error leaks')
})

t.test('a typed error becomes its code and status; a 401 says how to authenticate (RFC 6750)', async t => {
  const app = await appWithRoutes(t)
  const without = await app.inject({ url: '/test/revoked' })
  t.equal(without.statusCode, 401)
  errorShape(t, without.json(), 401, 'token_revoked')
  t.equal(without.headers['www-authenticate'], 'Bearer realm="latchkey"')
  const withToken = await app.inject({ url: '/test/revoked', headers: { authorization: 'Bearer abc' } })
  t.equal(withToken.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
})

t.test('responses carry the security headers: the API set on JSON, helmet\'s set for the Swagger UI pages', async t => {
  const app = await appWithRoutes(t)
  for (const url of ['/health', '/no/such/route', '/test/revoked']) {
    const res = await app.inject({ url })
    t.same(pick(res.headers, Object.keys(apiHeaders)), apiHeaders, `${url}: the API set`)
    t.equal(res.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'", `${url}: nothing in it runs or is framed`)
    t.equal(res.headers['x-powered-by'], undefined, `${url} does not advertise the framework`)
  }
  const docs = await app.inject({ url: '/docs' })
  t.equal(docs.statusCode, 200)
  t.match(docs.headers['content-security-policy'], /default-src 'self';.*script-src 'self'/, 'the docs pages may run their own scripts')
  t.equal(docs.headers['x-frame-options'], 'SAMEORIGIN')
  t.equal(docs.headers['x-content-type-options'], 'nosniff')
})

/** Writes raw bytes to the listening app and reads until the server closes the connection. */
async function raw (port: number, request: string): Promise<{ head: string, body: string }> {
  const socket = net.connect(port, '127.0.0.1')
  let data = ''
  socket.on('data', chunk => { data += chunk })
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  socket.write(request)
  await new Promise((resolve, reject) => socket.once('close', resolve).once('error', reject))
  const [head, body = ''] = data.split('\r\n\r\n')
  return { head, body }
}

async function listening (t: Test, overrides = {}) {
  const app = await build(t, overrides)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, port: (app.server.address() as AddressInfo).port }
}

t.test('errors below the routes answer in the §12 shape too', async t => {
  const { port } = await listening(t)

  const big = await raw(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`)
  t.match(big.head, /^HTTP\/1\.1 431 Request Header Fields Too Large/, 'headers over 16 KiB: 431')
  errorShape(t, JSON.parse(big.body), 431, 'headers_too_large')

  const framing = await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')
  t.match(framing.head, /^HTTP\/1\.1 400 /, 'two Content-Length headers (request smuggling): 400')
  errorShape(t, JSON.parse(framing.body), 400, 'validation_failed')

  const garbage = await raw(port, 'HELLO\r\n\r\n')
  t.match(garbage.head, /^HTTP\/1\.1 400 /, 'not HTTP at all: 400')
  errorShape(t, JSON.parse(garbage.body), 400, 'validation_failed')

  const badUrl = await fetch(`http://127.0.0.1:${port}/sessions/%E0%A4%A`)
  t.equal(badUrl.status, 400, 'a malformed percent-encoding: 400')
  errorShape(t, await badUrl.json() as Record<string, unknown>, 400, 'validation_failed')
  t.ok(badUrl.headers.get('x-request-id'), 'with its request id')

  const longUrl = await fetch(`http://127.0.0.1:${port}/health?q=${'a'.repeat(9000)}`)
  t.equal(longUrl.status, 414, 'a URL over 8 KiB: 414')
  errorShape(t, await longUrl.json() as Record<string, unknown>, 414, 'uri_too_long')

  const longParam = await fetch(`http://127.0.0.1:${port}/sessions/${'a'.repeat(200)}`, { method: 'DELETE' })
  t.equal(longParam.status, 414, 'a path parameter over the router\'s limit: 414')
  errorShape(t, await longParam.json() as Record<string, unknown>, 414, 'uri_too_long')
})

t.test('a request too slow to arrive is 408 request_timeout', async t => {
  const { port } = await listening(t, { REQUEST_TIMEOUT: '1s', HEADERS_TIMEOUT: '1s' })
  // Headers complete, the body never comes.
  const slow = await raw(port, 'POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"em')
  t.match(slow.head, /^HTTP\/1\.1 408 Request Timeout/)
  errorShape(t, JSON.parse(slow.body), 408, 'request_timeout')
})

t.test('while the server closes, requests still arriving get 503 service_unavailable with Retry-After', async t => {
  const app = await build(t)
  let markClosing = () => {}
  const closing = new Promise<void>(resolve => { markClosing = resolve })
  // Runs after the errors plugin's own preClose: from here on the server is closing.
  app.addHook('preClose', async () => markClosing())
  let markArrived = () => {}
  const arrived = new Promise<void>(resolve => { markArrived = resolve })
  app.addHook('onRequest', async request => { if (request.url === '/auth/login') markArrived() })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  // A request whose body has not all arrived keeps the close waiting; a second
  // request pipelined behind it on the same connection arrives while closing.
  const body = JSON.stringify({ email: 'nobody@example.com', password: 'correct horse battery staple' })
  const socket = net.connect(port, '127.0.0.1')
  let data = ''
  socket.on('data', chunk => { data += chunk })
  await new Promise(resolve => socket.once('connect', resolve))
  socket.write(`POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`)
  await arrived
  const closed = app.close()
  await closing
  socket.write(`${body.slice(5)}GET /health HTTP/1.1\r\nHost: x\r\n\r\n`)
  await new Promise(resolve => socket.once('close', resolve))
  await closed
  const replies = data.split(/(?=HTTP\/1\.1 )/)
  t.match(replies[0], /^HTTP\/1\.1 401 /, 'the request in flight got its real answer')
  t.equal(replies.length, 2, 'the pipelined one got an answer too')
  t.match(replies[1], /^HTTP\/1\.1 503 /)
  t.match(replies[1], /retry-after: 5/i)
  errorShape(t, JSON.parse(replies[1].split('\r\n\r\n')[1]), 503, 'service_unavailable')
})
