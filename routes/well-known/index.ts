import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { errors } from '../../openapi/components.js'

// The folder cannot be named `.well-known` (autoload skips dot folders), so its prefix is set here.
export const prefixOverride = '/.well-known'

const Jwk = Type.Object({
  kty: Type.Union([Type.Literal('RSA'), Type.Literal('EC'), Type.Literal('OKP')]),
  kid: Type.String(),
  alg: Type.Union([Type.Literal('RS256'), Type.Literal('ES256'), Type.Literal('EdDSA')]),
  use: Type.Literal('sig'),
  crv: Type.Optional(Type.String({ description: 'EC and OKP keys: P-256 or Ed25519' })),
  n: Type.Optional(Type.String({ description: 'RSA modulus' })),
  e: Type.Optional(Type.String({ description: 'RSA exponent' })),
  x: Type.Optional(Type.String()),
  y: Type.Optional(Type.String())
}, { description: 'A public key, as RFC 7517 writes it; never a private part or an HMAC secret' })

const route: FastifyPluginAsyncTypebox = async (app) => {
  const maxAge = `public, max-age=${app.config.JWKS_MAX_AGE}`

  app.get('/jwks.json', {
    schema: {
      tags: ['keys'],
      summary: 'The public keys that verify latchkey\'s tokens: the current, the next and the previous ones',
      description: 'Empty under an HMAC algorithm. Keys are published before they sign and stay until what they signed has expired, so a copy cached for its max-age never misses a key.',
      operationId: 'getJwks',
      response: { 200: Type.Object({ keys: Type.Array(Jwk) }), ...errors(429) }
    }
  }, async (_request, reply) => {
    reply.header('cache-control', maxAge)
    return app.keys.jwks()
  })
}

export default route
