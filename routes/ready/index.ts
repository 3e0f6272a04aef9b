import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { sql } from 'kysely'
import { errors } from '../../openapi/components.js'
import { AppError } from '../../plugins/infra/errors.js'

// A readiness probe must answer quickly even when a backend hangs.
function within<T> (ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('timed out')), ms) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    config: { rateLimit: false },
    schema: {
      tags: ['health'],
      summary: 'Readiness: the database is reachable (a lost cache is reported, not fatal)',
      description: 'Without the cache (Redis) the service keeps working on the database (SPEC §15), so it stays 200 ' +
        'with `status: "degraded"`: a load balancer must not take every instance out because the cache died.',
      operationId: 'getReady',
      response: {
        200: Type.Object({
          status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
          database: Type.Literal('ok'),
          cache: Type.Union([Type.Literal('ok'), Type.Literal('unreachable')])
        }, { additionalProperties: false, description: 'Ready; `degraded` while the cache cannot be reached.' }),
        ...errors({ 503: ['service_unavailable'] })
      }
    }
  }, async (request, reply) => {
    const [database, cache] = await Promise.all([
      within(2000, sql`select 1`.execute(app.db)).then(() => true, (err: Error) => {
        request.log.warn({ err }, 'readiness: database unreachable')
        return false
      }),
      within(2000, app.cache.ping()).catch(() => false)
    ])
    if (!database) {
      reply.header('retry-after', '5')
      throw new AppError('service_unavailable', { message: 'The database cannot be reached; try again shortly.' })
    }
    if (!cache) request.log.warn('readiness: cache unreachable, running on the database alone')
    return { status: cache ? 'ok' as const : 'degraded' as const, database: 'ok' as const, cache: cache ? 'ok' as const : 'unreachable' as const }
  })
}

export default route
