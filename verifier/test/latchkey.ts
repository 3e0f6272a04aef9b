// A real latchkey (ES256, the feed on) listening on a port, and a separate
// Fastify service that checks its tokens with the verifier alone.
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { build, type Env } from '../../test/helper.js'
import { asymmetric, pair } from '../../test/plugins/app/tokens/fixtures.js'
import { latchkeyVerifier, type VerifierOptions } from '../src/index.js'

type Test = Parameters<typeof build>[0]

export { pair }
export const feedToken = 'revocation-feed-token-of-the-tests'

/** latchkey signing with `key`, on `port` (a free one by default, or the port of a latchkey restarted). */
export async function startLatchkey (t: Test, key: ReturnType<typeof pair>, env: Env = {}, port = 0) {
  const app = await build(t, { ...asymmetric(key), REVOCATION_FEED_TOKEN: feedToken, ...env })
  const jwksFetches: number[] = []
  app.addHook('onResponse', async (request) => { if (request.url === '/.well-known/jwks.json') jwksFetches.push(Date.now()) })
  await app.listen({ host: '127.0.0.1', port })
  const baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return { app, baseUrl, port: (app.server.address() as AddressInfo).port, jwksFetches }
}

export const verifierOptions = (baseUrl: string, feedBase = baseUrl): VerifierOptions => ({
  issuer: 'latchkey',
  audience: 'latchkey',
  jwksUrl: `${baseUrl}/.well-known/jwks.json`,
  feedUrl: `${feedBase}/revocations/stream`,
  feedToken
})

/** Another service: its one route answers the caller's claims, behind the verifier's plugin. */
export async function startService (t: Test, options: VerifierOptions) {
  const service = Fastify()
  await service.register(latchkeyVerifier, options)
  service.get('/whoami', async request => ({ sub: request.latchkey?.sub, sid: request.latchkey?.sid }))
  t.teardown(() => service.close())
  await service.listen({ host: '127.0.0.1', port: 0 })
  await service.latchkeyVerifier.ready()
  const url = `http://127.0.0.1:${(service.server.address() as AddressInfo).port}/whoami`
  /** The service's answer to a request with the token: its status and §12 code. */
  async function call (accessToken: string): Promise<{ status: number, code?: string, sub?: string }> {
    const res = await fetch(url, { headers: { authorization: `Bearer ${accessToken}` } })
    const body = await res.json() as { code?: string, sub?: string }
    return { status: res.status, code: body.code, sub: body.sub }
  }
  return { service, verifier: service.latchkeyVerifier, call }
}
