import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import autoload from '@fastify/autoload'
import fp from 'fastify-plugin'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { PGlite } from '@electric-sql/pglite'
import configPlugin, { loadConfig, type Config } from './config.js'

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
    forceCloseConnections: false,
    // PGlite's first start (initdb in DATA_DIR) takes many seconds on a small machine.
    pluginTimeout: 120_000,
    return503OnClosing: true
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
