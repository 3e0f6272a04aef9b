import { createHmac } from 'node:crypto'
import { isIPv4, isIPv6 } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { AppError } from '../../infra/errors.js'
import type { TokenKind, TokenSession } from '../tokens/tokens.js'

/** Where a request comes from: the address as TRUST_PROXY resolves it, in canonical form, and the User-Agent. */
export interface Client {
  ip: string
  userAgent?: string
}

const mappedIpv4 = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/

/**
 * One spelling per address, so a binding compares addresses rather than
 * strings: IPv6 in RFC 5952 form (lower case, the longest zero run
 * compressed, as the URL parser writes it) and an IPv4-mapped IPv6 address as
 * the IPv4 address it is — a dual-stack listener sees 127.0.0.1 as
 * ::ffff:127.0.0.1.
 */
export function canonicalIp (ip: string): string {
  if (isIPv4(ip) || !isIPv6(ip)) return ip
  const zone = ip.indexOf('%')
  const address = zone === -1 ? ip : ip.slice(0, zone)
  const host = new URL(`http://[${address}]`).hostname.slice(1, -1)
  const mapped = mappedIpv4.exec(host)
  if (mapped) {
    const [high, low] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)]
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
  }
  return zone === -1 ? host : host + ip.slice(zone)
}

export function clientOf (request: FastifyRequest): Client {
  return { ip: canonicalIp(request.ip), userAgent: request.headers['user-agent'] }
}

type Claims = { sub: string, sid: string, bnd?: string }

declare module 'fastify' {
  interface FastifyInstance {
    binding: {
      /** The `bnd` claim of each kind of token issued to this client under TOKEN_BINDING (none when unbound). */
      of (client: Client): TokenSession['bnd']
      /**
       * Refuses a token presented by another client than the one it was bound
       * to (SPEC §8): 401 `token_binding_mismatch`, or the given status (400
       * on refresh). The one place a binding mismatch is noticed.
       */
      enforce (kind: TokenKind, claims: Claims, client: Client, statusCode?: number): Promise<void>
    }
  }
}

export default fp(async (app) => {
  const mode = app.config.TOKEN_BINDING
  const key = app.keys.derive('token-binding')
  // Keyed, so the claim reveals neither the User-Agent nor the address, and
  // cannot be computed for a guess without the key. The values are labelled
  // and JSON-framed: no two different tuples hash alike.
  const hash = (...values: string[]) => createHmac('sha256', key).update(JSON.stringify(values)).digest('base64url')
  const device = (client: Client) => hash('device', client.userAgent ?? '')

  function of (client: Client): TokenSession['bnd'] {
    switch (mode) {
      case 'none': return {}
      case 'device': return { access: device(client), refresh: device(client) }
      // Refresh tokens bind to the device only, so a phone that changes network can still refresh.
      case 'ip': return { access: hash('ip', client.ip) }
      case 'device+ip': return { access: hash('device+ip', client.userAgent ?? '', client.ip), refresh: device(client) }
    }
  }

  app.decorate('binding', {
    of,
    async enforce (kind: TokenKind, claims: Claims, client: Client, statusCode = 401) {
      const expected = of(client)[kind]
      // A token issued before binding was turned on carries no claim: refused too, as from anywhere.
      if (expected === undefined || claims.bnd === expected) return
      app.log.warn({ userId: claims.sub, sessionId: claims.sid, kind }, 'token presented from another client than it was bound to')
      await app.audit.recordAlone({ type: 'session.binding_mismatch', userId: claims.sub, sessionId: claims.sid, client, detail: { token: kind, binding: mode } })
      throw new AppError('token_binding_mismatch', { statusCode })
    }
  })
}, { name: 'binding', dependencies: ['config', 'keys', 'audit'] })
