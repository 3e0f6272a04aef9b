import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { freePort, uniqueEmail } from './helper.js'

const serverPath = fileURLToPath(new URL('../server.ts', import.meta.url))
// Resolved here, so the server can run from a directory of its own (where no
// developer's `.env` is read) and still find the TypeScript loader.
const tsx = import.meta.resolve('tsx')
// The embedded database's first start (initdb on disk) takes seconds: the
// servers of this file share one DATA_DIR, as restarts of `npm start` do.
const sharedDataDir = mkdtempSync(join(tmpdir(), 'latchkey-server-'))

interface Server {
  child: ChildProcess
  port: number
  output: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** `npm start`, as a child process: the run's backends when set, else the embedded ones. */
async function startServer (t: Test, env: Record<string, string | undefined>): Promise<Server> {
  const port = await freePort()
  let output = ''
  const child = spawn(process.execPath, ['--import', tsx, serverPath], {
    cwd: mkdtempSync(join(tmpdir(), 'latchkey-server-cwd-')),
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'test',
      LOG_LEVEL: 'info',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: sharedDataDir,
      DATABASE_URL: process.env.DATABASE_URL,
      REDIS_URL: process.env.REDIS_URL,
      CACHE_PREFIX: `latchkey-test-${randomUUID()}:`,
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  child.stdout?.on('data', chunk => { output += chunk })
  child.stderr?.on('data', chunk => { output += chunk })
  const exited = once(child, 'exit').then(([code, signal]) => ({ code, signal }))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return { child, port, output: () => output, exited }
}

/** Resolves once the server logs that it listens; rejects if it exits first. */
async function listening (server: Server, ms = 60_000) {
  const until = Date.now() + ms
  while (!/Server listening at/.test(server.output())) {
    if (server.child.exitCode !== null) throw new Error(`the server exited (${server.child.exitCode}):\n${server.output()}`)
    if (Date.now() > until) throw new Error(`the server did not listen within ${ms} ms:\n${server.output()}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

function connect (port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** Sends a raw HTTP request and reads the whole reply (the server closes the connection). */
function readAll (socket: net.Socket): Promise<string> {
  let data = ''
  socket.on('data', chunk => { data += chunk })
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(data))
    socket.once('error', reject)
  })
}

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

t.test('NODE_ENV=production without JWT_SECRET: the server refuses to start and names JWT_SECRET', async t => {
  const server = await startServer(t, { NODE_ENV: 'production', JWT_SECRET: undefined })
  const { code } = await server.exited
  t.not(code, 0, 'non-zero exit')
  t.match(server.output(), /JWT_SECRET/)
  t.notMatch(server.output(), /Server listening/)
})

t.test('a wrong value: the server refuses to start and names the variable', async t => {
  const server = await startServer(t, { ACCESS_TOKEN_TTL: '5x' })
  const { code } = await server.exited
  t.not(code, 0, 'non-zero exit')
  t.match(server.output(), /ACCESS_TOKEN_TTL/)
})
