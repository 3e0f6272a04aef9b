import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { VerifierError, type VerifierErrorCode } from './errors.js'
import { createVerifier, type AccessClaims, type Verifier, type VerifierOptions } from './verifier.js'

declare module 'fastify' {
  interface FastifyInstance {
    latchkeyVerifier: Verifier
  }
  interface FastifyRequest {
    /** The verified claims of the request's access token. */
    latchkey: AccessClaims | null
  }
}

/** The verifier's options, or a verifier made with `createVerifier` (the app then closes it itself). */
export type LatchkeyVerifierOptions = VerifierOptions | { verifier: Verifier }

const statusText = { 401: 'Unauthorized', 503: 'Service Unavailable' }

function refuse (reply: FastifyReply, err: VerifierError, tokenSent: boolean) {
  // RFC 6750 §3.1 and RFC 9449 §7.1: say why, in the scheme the client has to answer in.
  const challenge: Partial<Record<VerifierErrorCode, string>> = {
    token_missing: 'Bearer realm="latchkey"',
    dpop_proof_invalid: 'DPoP realm="latchkey", error="invalid_dpop_proof"'
  }
  if (err.status === 401) reply.header('www-authenticate', challenge[err.code] ?? (tokenSent ? 'Bearer realm="latchkey", error="invalid_token"' : 'Bearer realm="latchkey"'))
  else reply.header('retry-after', '5')
  return reply.code(err.status).send({ statusCode: err.status, code: err.code, error: statusText[err.status], message: err.message })
}

/**
 * Every route of the scope it is registered in requires a latchkey access
 * token — `Authorization: Bearer <token>`, or `DPoP <token>` with a `DPoP`
 * proof header — and finds its claims in `request.latchkey`. Refusals are
 * latchkey's error shape (SPEC §12) with its `WWW-Authenticate` challenge.
 */
export const latchkeyVerifier = fp<LatchkeyVerifierOptions>(async (app, options) => {
  const owned = !('verifier' in options)
  const verifier = 'verifier' in options ? options.verifier : createVerifier(options)
  app.decorate('latchkeyVerifier', verifier)
  app.decorateRequest('latchkey', null)
  if (owned) app.addHook('onClose', () => verifier.close())

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const match = /^(Bearer|DPoP)[ \t]+([^ \t]+)[ \t]*$/i.exec(request.headers.authorization ?? '')
    if (!match) return refuse(reply, new VerifierError('token_missing'), false)
    const [, scheme, token] = match
    const proof = request.headers.dpop
    const dpop = scheme.toLowerCase() === 'dpop'
      ? { proof: typeof proof === 'string' ? proof : undefined, method: request.method, url: `${request.protocol}://${request.host}${request.url}` }
      : undefined
    try {
      request.latchkey = await verifier.verify(token, { dpop })
    } catch (err) {
      if (err instanceof VerifierError) return refuse(reply, err, true)
      throw err
    }
  })
}, { name: '@latchkey/verifier', fastify: '5.x' })
