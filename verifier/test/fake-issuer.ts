// A stand-in for latchkey's public surface — JWKS, the revocation feed, the
// verify route — that a test controls exactly: which keys are published, which
// events are listed, when the stream drops. The verifier's checks run against
// it; the tests beside a real latchkey show the same against the service.
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomUUID } from 'node:crypto'
import { base64url, exportJWK, generateKeyPair, SignJWT, calculateJwkThumbprint, type CryptoKey, type JWK } from 'jose'
import type { RevocationEvent } from '../src/index.js'

type Test = { teardown (fn: () => unknown): void }

export interface SigningKey { kid: string, privateKey: CryptoKey, jwk: JWK }

export async function signingKey (): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(jwk)
  return { kid, privateKey, jwk: { ...jwk, kid, alg: 'ES256', use: 'sig' } }
}

/** The claims of an access token latchkey would sign now. */
export function accessClaims (now = Math.floor(Date.now() / 1000)): Record<string, unknown> {
  return { iss: 'latchkey', aud: 'latchkey', sub: randomUUID(), sid: randomUUID(), jti: randomUUID(), iat: now, exp: now + 300, ver: 0, typ: 'access', role: 'user', email_verified: true }
}

export const feedToken = 'feed-token-feed-token-feed-token'

export async function fakeIssuer (t: Test) {
  const key = await signingKey()
  const state = {
    keys: [key.jwk],
    cacheControl: 'public, max-age=300',
    events: [] as RevocationEvent[],
    /** The oldest seq kept: a resume point before it answers with a reset. */
    oldestKept: 1,
    introspection: { status: 200, body: { valid: true } as object },
    jwksFetches: 0,
    streamRequests: [] as Array<string | undefined>,
    introspected: [] as string[],
    /** The feed answers 503 (the rest of latchkey still answers). */
    feedDown: false,
    jwksDown: false
  }
  const streams = new Set<ServerResponse>()
  const writeEvent = (res: ServerResponse, e: RevocationEvent) => res.write(`id: ${e.seq}\nevent: revocation\ndata: ${JSON.stringify(e)}\n\n`)

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake')
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
    }
    if (url.pathname === '/.well-known/jwks.json') {
      state.jwksFetches++
      if (state.jwksDown) return json(503, { code: 'service_unavailable' })
      return json(200, { keys: state.keys }, { 'cache-control': state.cacheControl })
    }
    if (url.pathname === '/auth/token/verify' && req.method === 'POST') {
      let body = ''
      req.on('data', chunk => { body += chunk })
      req.on('end', () => {
        state.introspected.push(JSON.parse(body).token)
        json(state.introspection.status, state.introspection.body)
      })
      return
    }
    if (req.headers.authorization !== `Bearer ${feedToken}`) return json(401, { code: 'token_invalid' })
    if (state.feedDown) return json(503, { code: 'service_unavailable' })
    if (url.pathname === '/revocations') {
      const after = Number(url.searchParams.get('after'))
      const reset = after + 1 < state.oldestKept
      const kept = state.events.filter(e => e.seq >= state.oldestKept)
      return json(200, { events: kept.filter(e => e.seq > after), last: state.events.at(-1)?.seq ?? 0, ...(reset && { reset: true }) })
    }
    if (url.pathname === '/revocations/stream') {
      const resume = req.headers['last-event-id'] as string | undefined
      state.streamRequests.push(resume)
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
      res.write(': connected\n\n')
      for (const e of state.events) if (e.seq > Number(resume ?? 0)) writeEvent(res, e)
      streams.add(res)
      res.on('close', () => streams.delete(res))
      return
    }
    json(404, { code: 'not_found' })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(() => new Promise(resolve => { server.closeAllConnections(); server.close(resolve) }))

  let seq = 0
  return {
    baseUrl,
    state,
    key,
    options: {
      issuer: 'latchkey',
      audience: 'latchkey',
      jwksUrl: `${baseUrl}/.well-known/jwks.json`,
      feedUrl: `${baseUrl}/revocations/stream`,
      feedToken
    },
    /** An access token as latchkey signs it; `claims` and `header` override. */
    async token (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, signer: SigningKey = key): Promise<string> {
      return await new SignJWT({ ...accessClaims(), ...claims }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: signer.kid, ...header }).sign(signer.privateKey)
    },
    /** A token of any header and payload, signed by the published key as they are (jose refuses to sign some). */
    async raw (header: Record<string, unknown>, payload: Record<string, unknown>): Promise<string> {
      const input = `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(payload))}`
      const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(input))
      return `${input}.${base64url.encode(new Uint8Array(signature))}`
    },
    /** Records a revocation; open streams get it at once (unless `silently`, as if they had dropped it). */
    revoke (event: Omit<RevocationEvent, 'seq' | 'at'>, silently = false): RevocationEvent {
      const recorded = { seq: ++seq, at: new Date().toISOString(), ...event }
      state.events.push(recorded)
      if (!silently) for (const res of streams) writeEvent(res, recorded)
      return recorded
    },
    /** Cuts every open stream, as a network drop does; `down` keeps the feed refusing after. */
    drop (down = false) {
      state.feedDown = down
      for (const res of streams) res.destroy()
      streams.clear()
    },
    /** Refuses connections from now on (and cuts the open ones): latchkey is down. */
    async stop () {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}
