import t from 'tap'
import { freePort, uniqueEmail } from './helper.js'
import { connect, listening, readAll, startServer, waitFor } from './server-process.js'

t.test('SIGTERM: the request in flight is answered, new connections are refused, exit code 0', async t => {
  const server = await startServer(t, {})
  await listening(server)

  const health = await fetch(`http://127.0.0.1:${server.port}/health`)
  t.equal(health.status, 200, 'the server answers over HTTP')

  // A request whose body is still arriving when the signal comes: in flight.
  const body = JSON.stringify({ email: uniqueEmail('shutdown'), password: 'correct horse battery staple' })
  const socket = await connect(server.port)
  const reply = readAll(socket)
  socket.write([
    'POST /auth/login HTTP/1.1',
    'Host: 127.0.0.1',
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    '', ''
  ].join('\r\n'))
  socket.write(body.slice(0, 10))
  await new Promise(resolve => setTimeout(resolve, 300))

  server.child.kill('SIGTERM')
  // Once the server has begun closing, nobody new gets in.
  const until = Date.now() + 5000
  let refused = false
  while (!refused && Date.now() < until) {
    refused = await connect(server.port).then(s => { s.destroy(); return false }, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED')
    if (!refused) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.ok(refused, 'new connections are refused while the request in flight finishes')
  t.equal(server.child.exitCode, null, 'the process waits for the request in flight')

  socket.write(body.slice(10))
  const response = await reply
  t.match(response, /^HTTP\/1\.1 401 /, 'the request in flight got its real answer')
  t.match(response, /"code":"invalid_credentials"/)

  const { code, signal } = await server.exited
  t.equal(code, 0, 'exit code 0')
  t.equal(signal, null)
  t.match(server.output(), /"signal":"SIGTERM"/, 'the shutdown is logged')
  await t.rejects(connect(server.port), { code: 'ECONNREFUSED' }, 'nothing listens any more')
})

t.test('stop with SIGINT and start again: the same database and secret, so tokens still work', async t => {
  const first = await startServer(t, {})
  await listening(first)
  const email = uniqueEmail('restart')
  const registered = await fetch(`http://127.0.0.1:${first.port}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'correct horse battery staple' })
  })
  t.equal(registered.status, 201)
  const { tokens } = await registered.json() as { tokens: { accessToken: string } }

  const stopping = Date.now()
  first.child.kill('SIGINT')
  t.equal((await first.exited).code, 0, 'SIGINT exits 0')
  t.ok(Date.now() - stopping < 5000, 'at once, with nothing in flight')

  const second = await startServer(t, {})
  await listening(second)
  const profile = await fetch(`http://127.0.0.1:${second.port}/profile`, { headers: { authorization: `Bearer ${tokens.accessToken}` } })
  t.equal(profile.status, 200, 'a token issued before the restart still works')
  t.match(await profile.json(), { email })
  second.child.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})

t.test('the start banner says where it runs; a request id is in every log line of its request', async t => {
  const metricsPort = await freePort()
  const server = await startServer(t, { METRICS_PORT: String(metricsPort), SMTP_URL: 'smtp://mailer:secret@127.0.0.1:2525' })
  await listening(server)
  await waitFor(server, /latchkey is running at/)
  const base = `http://127.0.0.1:${server.port}`
  const output = server.output()
  t.match(output, `latchkey is running at ${base}`)
  t.match(output, `docs      ${base}/docs`)
  t.match(output, /database {2}(embedded \(PGlite\) in \/|PostgreSQL )/)
  t.match(output, /cache {5}(in process|Redis )/)
  t.match(output, 'mail      SMTP mailer@127.0.0.1:2525')
  t.match(output, `metrics   http://127.0.0.1:${metricsPort}/metrics`)
  t.notMatch(output, /secret@/, 'no password in the banner')

  const res = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': 'trace-me-0042' },
    body: JSON.stringify({ email: uniqueEmail('reqid'), password: 'correct horse battery staple' })
  })
  t.equal(res.headers.get('x-request-id'), 'trace-me-0042', 'echoed')
  await waitFor(server, /"reqId":"trace-me-0042".*"request completed"/)
  const lines = server.output().split('\n').filter(l => l.includes('trace-me-0042'))
  const messages = lines.map(l => JSON.parse(l).msg)
  t.ok(messages.includes('incoming request') && messages.includes('request completed'), `the request's log lines carry it: ${messages.join(', ')}`)
  const unsafe = await fetch(`${base}/health`, { headers: { 'x-request-id': 'x'.repeat(65) } })
  t.match(unsafe.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'an unsafe one is replaced')
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
})
