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
      summary: 'Readiness: the database and the cache are reachable',
      operationId: 'getReady',
      response: {
        200: Type.Object({ status: Type.Literal('ok') }),
        ...errors(503)
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
    if (!database || !cache) {
      reply.header('retry-after', '5')
      const down = [database ? '' : 'database', cache ? '' : 'cache'].filter(Boolean).join(' and ')
      throw new AppError('service_unavailable', { message: `The ${down} cannot be reached; try again shortly.` })
    }
    return { status: 'ok' as const }
  })
}

export default route
