import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    config: { rateLimit: false },
    schema: {
      tags: ['health'],
      summary: 'Liveness: the process answers',
      operationId: 'getHealth',
      response: { 200: Type.Object({ status: Type.Literal('ok') }, { description: 'The process answers.' }) }
    }
  }, async () => ({ status: 'ok' as const }))
}

export default route
