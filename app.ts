import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import autoload from '@fastify/autoload'
import fp from 'fastify-plugin'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { PGlite } from '@electric-sql/pglite'
import configPlugin, { loadConfig, type Config } from './config.js'
import { clientErrorHandler, frameworkErrors } from './plugins/infra/errors.js'

const here = path.dirname(fileURLToPath(import.meta.url))

// Run from TypeScript sources (tsx, tap), autoload must pick up `.ts` files.
if (import.meta.url.endsWith('.ts')) process.env.FASTIFY_AUTOLOAD_TYPESCRIPT ??= '1'

/** Where log lines go: anything with `write` (pino's destination). */
export interface LogStream { write (line: string): void }

export interface AppOptions {
  config: Config
  /** An embedded database shared by several apps in one process (tests). */
  pglite?: PGlite
}

/**
 * The whole service as one plugin, in layers: configuration, ecosystem
 * plugins, our adapters to backends (infra), the domain services (app), then
 * the routes. Each layer is its own autoload step, so a plugin that names a
 * dependency from a later layer fails the boot: infrastructure cannot depend
 * on domain code.
 */
export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  // The API takes JSON only: a text/plain body is refused with 415, as every
  // other type is, instead of reaching validation as a string.
  fastify.removeContentTypeParser('text/plain')
  // First of all hooks, so every reply carries it, the errors of later hooks too.
  fastify.addHook('onRequest', async (request, reply) => { reply.header('x-request-id', request.id) })
  // Everything reads the configuration, the ecosystem plugins too: it comes first.
  await fastify.register(configPlugin, opts)
  await fastify.register(autoload, { dir: path.join(here, 'plugins/external'), options: opts })
  await fastify.register(autoload, { dir: path.join(here, 'plugins/infra'), options: opts })
  await fastify.register(autoload, { dir: path.join(here, 'plugins/app'), options: opts })
  await fastify.register(autoload, {
    dir: path.join(here, 'routes'),
    options: opts,
    autoHooks: true,
    cascadeHooks: true
  })
}

// Secrets by their exact paths (SPEC §17), never a family of names: `*.code`
// would hide an error's own code (40P01, ECONNREFUSED) from the operator.
export const redact = [
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]',
  'body.password', 'body.currentPassword', 'body.newPassword', 'body.refreshToken', 'body.token', 'body.code',
  'tokens.accessToken', 'tokens.refreshToken',
  'mail.text', 'mail.html'
]

function loggerOptions (config: Config, stream?: LogStream): FastifyServerOptions['logger'] {
  if (config.LOG_LEVEL === 'silent') return false
  return {
    level: config.LOG_LEVEL,
    redact: { paths: redact, censor: '[redacted]' },
    ...(stream && { stream }),
    ...(config.NODE_ENV === 'development' && { transport: { target: 'pino-pretty' } })
  }
}

// A caller's request id is kept when it is short and harmless in a log line or a header.
const safeRequestId = /^[A-Za-z0-9._-]{1,64}$/

function requestId (req: IncomingMessage): string {
  const sent = req.headers['x-request-id']
  return typeof sent === 'string' && safeRequestId.test(sent) ? sent : randomUUID()
}

export interface BuildOptions {
  /** Environment variables; the process environment when absent. */
  env?: Record<string, string | undefined>
  /** Read `.env` too (the server does; the tests do not). */
  dotenv?: boolean
  pglite?: PGlite
  /** Where the log goes instead of stdout (tests reading what was logged). */
  logStream?: LogStream
}

/** Builds the service exactly as the server runs it; the tests use this too. */
export async function buildApp (options: BuildOptions = {}) {
  const config = loadConfig(options.env ?? process.env, options.dotenv)
  const fastify = Fastify({
    logger: loggerOptions(config, options.logStream),
    trustProxy: config.TRUST_PROXY,
    bodyLimit: 16 * 1024,
    // Bodies are validated as sent: `["a@b.c"]` is not an email, `"1"` is not a number.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
    // A shutdown closes idle keep-alive connections at once; the server's grace ends the rest (server.ts).
    forceCloseConnections: 'idle',
    // PGlite's first start (initdb in DATA_DIR) takes many seconds on a small machine.
    pluginTimeout: 120_000,
    // The errors plugin answers while closing, in the §12 shape with Retry-After.
    return503OnClosing: false,
    requestIdHeader: false,
    genReqId: requestId,
    clientErrorHandler,
    frameworkErrors,
    // Slow clients are bounded: headers must arrive within HEADERS_TIMEOUT, the whole
    // request within REQUEST_TIMEOUT, and a silent socket closes after CONNECTION_TIMEOUT.
    requestTimeout: config.REQUEST_TIMEOUT * 1000,
    connectionTimeout: config.CONNECTION_TIMEOUT * 1000,
    keepAliveTimeout: config.KEEP_ALIVE_TIMEOUT * 1000,
    http: {
      headersTimeout: config.HEADERS_TIMEOUT * 1000,
      // Node checks both timeouts on this interval (30 s by default): a quarter of the header timeout keeps it close.
      connectionsCheckingInterval: Math.max(250, Math.min(config.HEADERS_TIMEOUT * 250, 30_000))
    }
  }).withTypeProvider<TypeBoxTypeProvider>()
  // Unencapsulated, so the server and the tests see the decorators (app.config, app.db, …).
  try {
    await fastify.register(fp(app), { config, pglite: options.pglite })
  } catch (err) {
    // A plugin refused to start (a wrong key, say) after the pool and Redis were
    // opened: close them, or a caller that survives the error keeps their sockets.
    await fastify.close()
    throw err
  }
  return fastify
}
