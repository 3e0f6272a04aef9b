import type { AddressInfo } from 'node:net'
import t from 'tap'
import { build } from './helper.js'
import { dripping, listening, startServer } from './server-process.js'

// SPEC §12: slow clients are bounded, and a shutdown never waits on them past its grace.

t.test('slowloris: 100 sockets dripping their headers are closed by the header timeout; a normal client is served meanwhile', async t => {
  // The app as the server builds it, on a real socket in this process.
  const app = await build(t, { HEADERS_TIMEOUT: '2s' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const clients = Array.from({ length: 100 }, () => dripping(port))
  t.teardown(() => { for (const c of clients) c.stop() })
  await Promise.all(clients.map(c => new Promise(resolve => c.socket.once('connect', resolve))))

  const served = await fetch(`http://127.0.0.1:${port}/health`)
  t.equal(served.status, 200, 'a normal client is served while 100 sockets drip')
  t.same(await served.json(), { status: 'ok' })

  const replies = await Promise.all(clients.map(c => c.closed))
  t.equal(replies.length, 100, 'the server closed all 100 sockets')
  t.ok(replies.every(r => /^HTTP\/1\.1 408 /.test(r)), 'each got a 408')
  t.same(JSON.parse(replies[0].split('\r\n\r\n')[1]), {
    statusCode: 408, code: 'request_timeout', error: 'Request Timeout', message: 'The request took too long to arrive.'
  }, 'in the §12 shape')
  t.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'and the server is still fine')
})

t.test('SIGTERM with a client dripping its headers: the grace ends it, and the exit code is still 0', async t => {
  // The header timeout is far off: only the shutdown grace can end this client.
  const server = await startServer(t, { SHUTDOWN_GRACE: '2s', HEADERS_TIMEOUT: '5m', REQUEST_TIMEOUT: '10m' })
  await listening(server)
  const client = dripping(server.port)
  t.teardown(() => client.stop())
  await new Promise(resolve => client.socket.once('connect', resolve))
  // The server has the connection once it answers on another one.
  t.equal((await fetch(`http://127.0.0.1:${server.port}/health`)).status, 200)

  server.child.kill('SIGTERM')
  const [{ code, signal }] = await Promise.all([server.exited, client.closed])
  t.equal(code, 0, 'exit code 0')
  t.equal(signal, null)
  t.match(server.output(), /shutdown grace over: closing the connections still open/)
  t.notMatch(server.output(), /killed by timeout/, 'not by close-with-grace\'s backstop')
})
