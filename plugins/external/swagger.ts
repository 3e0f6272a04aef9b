import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { components } from '../../openapi/components.js'

type Operation = { requestBody?: { required?: boolean } }

export default fp(async (app) => {
  for (const schema of components) app.addSchema(schema)
  // Routes whose body may be left out (`config.optionalBody`): @fastify/swagger marks every body required.
  const optionalBodies = new Set<string>()

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
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          feedToken: { type: 'http', scheme: 'bearer', description: 'REVOCATION_FEED_TOKEN, shared with the services that follow the revocation feed.' },
          // RFC 9449: the access token of a DPoP-bound session, with a proof of each request in the `DPoP` header.
          DPoP: {
            type: 'http',
            scheme: 'dpop',
            description: 'A DPoP-bound access token (`tokenType: "DPoP"`) as `Authorization: DPoP <token>`, with a fresh proof by the bound key in the `DPoP` header.'
          }
        }
      },
      tags: [
        { name: 'auth', description: 'Registration, login, tokens and logout' },
        { name: 'profile', description: 'The signed-in user' },
        { name: 'keys', description: 'The public keys other services verify tokens with' },
        { name: 'revocations', description: 'The revocation feed, for services that verify tokens themselves' },
        { name: 'health', description: 'Liveness and readiness' }
      ]
    },
    // A folder's index route is registered as both `/health` and `/health/`;
    // the document names it as SPEC §5 and clients do, without the slash.
    transform: ({ schema, url, route }) => {
      const documented = url.length > 1 ? url.replace(/\/$/, '') : url
      if (route.config?.optionalBody) for (const method of [route.method].flat()) optionalBodies.add(`${method.toLowerCase()} ${documented}`)
      return { schema, url: documented }
    },
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject
      const { openapiObject } = document
      for (const [url, item] of Object.entries(openapiObject.paths ?? {})) {
        for (const [method, operation] of Object.entries(item as Record<string, Operation>)) {
          if (optionalBodies.has(`${method} ${url}`) && operation.requestBody) operation.requestBody.required = false
        }
      }
      return openapiObject
    },
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
