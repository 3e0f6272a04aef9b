import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { build, type App, type Env } from '../../test/helper.js'

export { password, uniqueEmail } from '../../test/helper.js'

type Test = Parameters<typeof build>[0]

export interface Served {
  app: App
  baseUrl: string
  /** Every reply the server sent, in order. */
  replies: Array<{ method: string, url: string, status: number }>
  /** The statuses of the server's replies to `POST /auth/refresh`, in order. */
  refreshes (): number[]
}

/** A real latchkey listening on a free port of 127.0.0.1, closed when the test ends. */
export async function serve (t: Test, env: Env = {}): Promise<Served> {
  const app = await build(t, env)
  const replies: Served['replies'] = []
  app.addHook('onResponse', async (request, reply) => {
    replies.push({ method: request.method, url: request.url, status: reply.statusCode })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const refreshes = () => replies.filter(r => r.method === 'POST' && r.url === '/auth/refresh').map(r => r.status)
  return { app, baseUrl: `http://127.0.0.1:${port}`, replies, refreshes }
}

/** The claims of a JWT, unverified (the test only reads `exp`). */
export function claims (token: string): { exp: number, sid: string, jti: string } {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))
}

/**
 * Waits until the server's clock has passed the token's `exp` (one clock:
 * the server runs in this process), so the next request with it is refused
 * with `token_expired`.
 */
export async function expire (accessToken: string): Promise<void> {
  const wait = claims(accessToken).exp * 1000 + 5 - Date.now()
  if (wait > 0) await sleep(wait)
}

interface StoredCookie { value: string, attributes: Record<string, string | true> }

/** One Set-Cookie header: its name, value and attributes (names lower-cased). */
export function parseSetCookie (header: string): { name: string } & StoredCookie {
  const [pair, ...rest] = header.split(';').map(part => part.trim())
  const eq = pair.indexOf('=')
  const attributes: Record<string, string | true> = {}
  for (const attribute of rest) {
    const at = attribute.indexOf('=')
    if (at === -1) attributes[attribute.toLowerCase()] = true
    else attributes[attribute.slice(0, at).toLowerCase()] = attribute.slice(at + 1)
  }
  return { name: pair.slice(0, eq), value: pair.slice(eq + 1), attributes }
}

/**
 * What a browser does with cookies, for node's fetch: stores what Set-Cookie
 * sends (Max-Age=0 deletes) and sends it back as the Cookie header. The
 * server's attributes stay as they are: browsers treat 127.0.0.1 as a secure
 * context, where a `Secure` cookie is kept over plain HTTP.
 */
export function cookieJar () {
  const cookies = new Map<string, StoredCookie>()
  const setCookies: string[] = []
  async function fetchWithJar (request: Request): Promise<Response> {
    const headers = new Headers(request.headers)
    // Same-origin requests carry cookies too; only `omit` keeps them back.
    if (cookies.size > 0 && request.credentials !== 'omit') {
      headers.set('cookie', [...cookies].map(([name, c]) => `${name}=${c.value}`).join('; '))
    }
    const response = await fetch(new Request(request, { headers }))
    for (const header of response.headers.getSetCookie()) {
      setCookies.push(header)
      const { name, value, attributes } = parseSetCookie(header)
      if (attributes['max-age'] === '0') cookies.delete(name)
      else cookies.set(name, { value, attributes })
    }
    return response
  }
  return { fetch: fetchWithJar, cookies, setCookies }
}
