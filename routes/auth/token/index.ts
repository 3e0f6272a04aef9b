import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { errors } from '../../../openapi/components.js'

const VerifyBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 4096 }) }, {
  additionalProperties: false,
  examples: [{ token: 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl' }]
})
const Verified = Type.Object({
  valid: Type.Literal(true),
  type: Type.Union([Type.Literal('access'), Type.Literal('refresh')]),
  sub: Type.String({ format: 'uuid' }),
  sid: Type.String({ format: 'uuid' }),
  exp: Type.Integer({ description: 'Expiry, in seconds since the epoch.' }),
  bound: Type.Boolean({ description: 'Bound to a device and/or IP (TOKEN_BINDING); reported, not enforced here.' }),
  cnf: Type.Optional(Type.Object({
    jkt: Type.String({ description: 'The RFC 7638 thumbprint of the DPoP key.' })
  }, { description: 'For a DPoP-bound token (SPEC §8.1): the key it is bound to; reported, not enforced here.' }))
}, { description: 'The token is valid and not revoked.' })

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/verify', {
    schema: {
      tags: ['auth'],
      summary: 'Check an access or refresh token: signature, claims and revocation state',
      operationId: 'verifyToken',
      body: VerifyBody,
      response: { 200: Verified, ...errors({ 400: ['validation_failed'], 401: ['token_invalid', 'token_expired', 'token_revoked', 'account_disabled'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
    }
  }, async (request) => {
    const { token } = request.body
    // The unverified `typ` only picks which verifier runs; that verifier checks everything.
    const kind = app.tokens.decode(token)?.typ
    const claims = kind === 'refresh'
      ? await app.sessions.check(token)
      : app.tokens.verify(token, 'access')
    if (claims.typ === 'access') await app.principalOf(claims)
    return {
      valid: true as const,
      type: claims.typ,
      sub: claims.sub,
      sid: claims.sid,
      exp: claims.exp,
      bound: claims.bnd !== undefined,
      ...(claims.cnf !== undefined && { cnf: { jkt: claims.cnf.jkt } })
    }
  })
}

export default route
