import { request as httpRequest } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { App } from './helper.js'

export interface Shot {
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'
  url: string
  payload?: object
  /** Sent as `Authorization: Bearer …`. */
  accessToken?: string
}

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

/** The app on a real port of 127.0.0.1 (listening from the first call on; closed with the app). */
async function portOf (app: App): Promise<number> {
  if (!app.server.listening) await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

/**
 * Fires every request at one instant over real HTTP and collects every reply.
 * Each request gets its own connection; nothing is written until all of them
 * are connected (the barrier), then every request goes out whole in one
 * synchronous loop, so the server reads them all on the same turns and their
 * handlers overlap as far as the database lets them.
 */
export async function race (app: App, shots: Shot[]): Promise<Reply[]> {
  const port = await portOf(app)
  const inFlight = shots.map(shot => {
    const body = shot.payload === undefined ? undefined : JSON.stringify(shot.payload)
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method: shot.method ?? 'POST',
      path: shot.url,
      agent: false,
      headers: {
        ...(body !== undefined && { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
        ...(shot.accessToken !== undefined && { authorization: `Bearer ${shot.accessToken}` })
      }
    })
    const connected = new Promise<void>((resolve, reject) => {
      req.once('error', reject)
      req.once('socket', (socket: Socket) => {
        if (socket.connecting) socket.once('connect', () => resolve())
        else resolve()
      })
    })
    const reply = new Promise<Reply>((resolve, reject) => {
      req.once('error', reject)
      req.once('response', res => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.once('error', reject)
        res.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let parsed: unknown = text
          try {
            parsed = text === '' ? undefined : JSON.parse(text)
          } catch {}
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed })
        })
      })
    })
    return { req, body, connected, reply }
  })
  await Promise.all(inFlight.map(r => r.connected))
  for (const { req, body } of inFlight) req.end(body)
  return await Promise.all(inFlight.map(r => r.reply))
}

/** "200: 31, 400 refresh_reused: 19": how a batch of rounds answered, for the test's log. */
export function tally (replies: Reply[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const { status, body } of replies) {
    const key = typeof body?.code === 'string' ? `${status} ${body.code}` : String(status)
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}
