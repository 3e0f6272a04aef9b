import fp from 'fastify-plugin'
import cors from '@fastify/cors'

/**
 * CORS for browser apps on other origins (SPEC §17), only the exact origins
 * in CORS_ORIGINS; unset, no CORS header is ever sent and browsers keep
 * other origins out.
 */
export default fp(async (app) => {
  const { CORS_ORIGINS, REFRESH_COOKIE } = app.config
  if (CORS_ORIGINS.length === 0) return
  await app.register(cors, {
    origin: CORS_ORIGINS,
    methods: ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type', 'DPoP', 'X-Token-Transport', 'X-Request-Id'],
    // What a browser app reads from replies: why a token was refused, when to retry, and the limits.
    exposedHeaders: ['WWW-Authenticate', 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'X-Request-Id'],
    // The refresh cookie (SPEC §6.1) only travels on credentialed requests.
    credentials: REFRESH_COOKIE === 'on',
    // Browsers cache the preflight for 10 minutes (Chromium caps it there anyway).
    maxAge: 600
  })
}, { name: 'cors', dependencies: ['config'] })
