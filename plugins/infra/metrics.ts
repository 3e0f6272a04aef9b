import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { poolOf } from './db.js'

export type StateTier = 'in_process' | 'redis' | 'database'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: {
      /** Counts one lookup of the revocation state, by the tier that answered it. */
      stateLookup (tier: StateTier): void
      /** Observes how long a change took from its commit to this instance, through PostgreSQL's notifications. */
      fanoutLag (seconds: number): void
      /** Where /metrics is served, once listening; null when METRICS_PORT is unset. */
      address (): AddressInfo | null
    }
  }
}

/**
 * Prometheus metrics (SPEC §17) on a listener of their own, HOST:METRICS_PORT,
 * never on the API port. Labels are bounded: route templates, statuses and the
 * §12 codes, never URLs or ids. Unset METRICS_PORT, nothing is measured.
 */
export default fp(async (app) => {
  const { METRICS_PORT, HOST } = app.config
  if (METRICS_PORT === undefined) {
    app.decorate('metrics', { stateLookup () {}, fanoutLag () {}, address: () => null })
    return
  }

  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const registers = [registry]

  const durations = new Histogram({
    name: 'latchkey_http_request_duration_seconds',
    help: 'Time to answer a request, by method, route template and status.',
    labelNames: ['method', 'route', 'status_code'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers
  })
  const logins = new Counter({ name: 'latchkey_logins_total', help: 'Login attempts, by outcome (success or the §12 code).', labelNames: ['outcome'], registers })
  const refreshes = new Counter({ name: 'latchkey_refreshes_total', help: 'Token refreshes, by outcome (success or the §12 code).', labelNames: ['outcome'], registers })
  const reuses = new Counter({ name: 'latchkey_refresh_reuse_detected_total', help: 'Rotated refresh tokens presented again: the session was ended.', registers })
  const logouts = new Counter({ name: 'latchkey_logouts_total', help: 'Logouts, by scope (global, local, others).', labelNames: ['scope'], registers })
  const codeChecks = new Counter({ name: 'latchkey_code_checks_total', help: 'Emailed one-time codes checked, by purpose and outcome.', labelNames: ['purpose', 'outcome'], registers })
  const lookups = new Counter({ name: 'latchkey_state_lookups_total', help: 'Revocation-state lookups, by the tier that answered (in_process, redis, database).', labelNames: ['tier'], registers })
  const lag = new Histogram({
    name: 'latchkey_revocation_fanout_lag_seconds',
    help: 'Time from a committed change to auth state to its notification arriving here through PostgreSQL (clocks of two instances).',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers
  })
  const pool = poolOf(app.db)
  // eslint-disable-next-line no-new -- registered with the registry, read on every scrape
  new Gauge({
    name: 'latchkey_db_pool_connections',
    help: 'PostgreSQL pool connections, by state (total, idle, waiting for one).',
    labelNames: ['state'],
    registers,
    collect () {
      if (!pool) return
      this.set({ state: 'total' }, pool.totalCount)
      this.set({ state: 'idle' }, pool.idleCount)
      this.set({ state: 'waiting' }, pool.waitingCount)
    }
  })

  // Auth outcomes are read off the reply, by route and §12 code, so the routes stay as they are.
  type Outcome = (request: FastifyRequest, outcome: string) => void
  const outcomes: Record<string, Outcome> = {
    'POST /auth/login': (_request, outcome) => logins.inc({ outcome }),
    'POST /auth/refresh': (_request, outcome) => {
      refreshes.inc({ outcome })
      if (outcome === 'refresh_reused') reuses.inc()
    },
    'POST /auth/logout': (request, outcome) => {
      if (outcome === 'success') logouts.inc({ scope: (request.body as { scope?: string } | undefined)?.scope ?? 'global' })
    },
    'POST /auth/email/verify': (_request, outcome) => codeChecks.inc({ purpose: 'verify_email', outcome }),
    'POST /auth/password/reset': (_request, outcome) => codeChecks.inc({ purpose: 'reset_password', outcome })
  }

  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    durations.observe({ method: request.method, route, status_code: reply.statusCode }, reply.elapsedTime / 1000)
    outcomes[`${request.method} ${route}`]?.(request, reply.statusCode < 400 ? 'success' : reply.errorCode ?? 'error')
  })

  let server: Server | undefined
  app.decorate('metrics', {
    stateLookup: (tier: StateTier) => lookups.inc({ tier }),
    fanoutLag: (seconds: number) => lag.observe(Math.max(0, seconds)),
    address: () => (server?.address() as AddressInfo | null | undefined) ?? null
  })

  app.addHook('onReady', async () => {
    const listener = createServer((req, res) => {
      if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found; metrics are at /metrics\n')
        return
      }
      registry.metrics().then(
        text => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => {
          app.log.error({ err }, 'metrics could not be collected')
          res.writeHead(500, { 'content-type': 'text/plain' }).end('Metrics could not be collected\n')
        }
      )
    })
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject)
      listener.listen(METRICS_PORT, HOST, () => resolve())
    })
    server = listener
  })
  app.addHook('onClose', async () => {
    if (!server) return
    const closing = new Promise(resolve => server?.close(resolve))
    server.closeAllConnections()
    await closing
  })
}, { name: 'metrics', dependencies: ['config', 'db'] })
