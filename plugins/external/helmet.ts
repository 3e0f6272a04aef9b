import type { IncomingMessage, ServerResponse } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import helmet, { type HelmetOptions } from 'helmet'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: this route's replies go without the security headers (the bench's baseline only). */
    securityHeaders?: boolean
  }
}

/**
 * What a JSON reply needs (the OWASP REST Security Cheat Sheet's set): it is
 * never run, framed, sniffed or embedded, whatever the browser. Six short
 * headers instead of helmet's twelve written for HTML pages, which cost every
 * API reply a tenth of its time (SPEC §16).
 */
export const apiHeaders: Record<string, string> = {
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin'
}

// The pages of Swagger UI at /docs run their own scripts and styles: helmet's set for HTML, with a CSP that lets them.
export const options: HelmetOptions = {
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
      // Served over plain HTTP by default (127.0.0.1): upgrading would break /docs.
      upgradeInsecureRequests: null
    }
  }
}

/**
 * The headers helmet sets, worked out once: none depends on the request (no
 * nonces), and @fastify/helmet built helmet's middleware, CSP parsing
 * included, again on every request.
 */
export function securityHeaders (helmetOptions: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const recorder = {
    setHeader (name: string, value: unknown) { headers[name.toLowerCase()] = String(value) },
    removeHeader (name: string) { delete headers[name.toLowerCase()] }
  }
  helmet(helmetOptions)({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => { if (err) throw err })
  return headers
}

export default fp(async (app) => {
  const documentHeaders = securityHeaders(options)
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    if (request.routeOptions.config.securityHeaders !== false) {
      reply.headers(request.routeOptions.url?.startsWith('/docs') ? documentHeaders : apiHeaders)
    }
    done()
  })
}, { name: 'security-headers' })
