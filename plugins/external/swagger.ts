import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { components } from '../../openapi/components.js'

export default fp(async (app) => {
  for (const schema of components) app.addSchema(schema)

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'latchkey',
        description: 'JWT authentication for API clients: logout ends tokens at once, refresh rotation catches stolen tokens.',
        version: '0.1.0'
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' }
        }
      },
      tags: [
        { name: 'auth', description: 'Registration, login, tokens and logout' },
        { name: 'profile', description: 'The signed-in user' },
        { name: 'keys', description: 'The public keys other services verify tokens with' },
        { name: 'health', description: 'Liveness and readiness' }
      ]
    },
    // A folder's index route is registered as both `/health` and `/health/`;
    // the document names it as SPEC §5 and clients do, without the slash.
    transform: ({ schema, url }) => ({ schema, url: url.length > 1 ? url.replace(/\/$/, '') : url }),
    // Shared schemas keep their `$id` as their component name.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`)
    }
  })

  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { persistAuthorization: true }
  })
}, { name: 'swagger', dependencies: ['config'] })
