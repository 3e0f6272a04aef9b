import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { nodeFlags } from '../bench/node-flags.js'
import { freePort } from './helper.js'

// `npm start` as a child process, for the tests of server.ts (test/server*.test.ts).

const serverPath = fileURLToPath(new URL('../server.ts', import.meta.url))
// Resolved here, so the server can run from a directory of its own (where no
// developer's `.env` is read) and still find the TypeScript loader.
const tsx = import.meta.resolve('tsx')
// The embedded database's first start (initdb on disk) takes seconds: the
// servers of this file share one DATA_DIR, as restarts of `npm start` do.
const sharedDataDir = mkdtempSync(join(tmpdir(), 'latchkey-server-'))

export interface Server {
  child: ChildProcess
  port: number
  output: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/**
 * `npm start`, as a child process, with its node flags: the run's backends
 * when set, else the embedded ones. `args` are node's instead (the compiled
 * server: `npm run start:prod`'s flags and its path).
 */
export async function startServer (t: Test, env: Record<string, string | undefined>, args = [...nodeFlags('start'), '--import', tsx, serverPath]): Promise<Server> {
  const port = await freePort()
  let output = ''
  const child = spawn(process.execPath, args, {
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
export async function listening (server: Server, ms = 60_000) {
  const until = Date.now() + ms
  while (!/Server listening at/.test(server.output())) {
    if (server.child.exitCode !== null) throw new Error(`the server exited (${server.child.exitCode}):\n${server.output()}`)
    if (Date.now() > until) throw new Error(`the server did not listen within ${ms} ms:\n${server.output()}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export function connect (port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** Sends a raw HTTP request and reads the whole reply (the server closes the connection). */
export function readAll (socket: net.Socket): Promise<string> {
  let data = ''
  socket.on('data', chunk => { data += chunk })
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(data))
    socket.once('error', reject)
  })
}

/** Resolves once the server's output matches; rejects if it exits first. */
export async function waitFor (server: Server, pattern: RegExp) {
  while (!pattern.test(server.output())) {
    if (server.child.exitCode !== null) throw new Error(`the server exited:\n${server.output()}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** A client sending a request's headers one byte a second, never finishing them. */
export function dripping (port: number) {
  const socket = net.connect(port, '127.0.0.1')
  const header = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n' + 'X-Slow: ' + 'z'.repeat(10_000)
  let sent = 0
  let received = ''
  socket.on('data', chunk => { received += chunk })
  socket.on('error', () => {})
  const timer = setInterval(() => { if (sent < header.length && socket.writable) socket.write(header[sent++]) }, 1000)
  const closed = new Promise<string>(resolve => socket.once('close', () => {
    clearInterval(timer)
    resolve(received)
  }))
  socket.once('connect', () => socket.write(header[sent++]))
  return { socket, closed, stop: () => { clearInterval(timer); socket.destroy() } }
}
