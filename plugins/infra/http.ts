import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The body may be left out altogether; it then reads as `{}` (and the OpenAPI document says it is optional). */
    optionalBody?: boolean
  }
}

const asArray = <T>(value: T | T[] | undefined): T[] => value === undefined ? [] : Array.isArray(value) ? value : [value]

/** Whether a route's successful replies carry tokens: their schema holds the shared `Tokens` component. */
function carriesTokens (route: Pick<RouteOptions, 'schema'>): boolean {
  const responses = (route.schema?.response ?? {}) as Record<string, unknown>
  return Object.entries(responses).some(([status, schema]) => status.startsWith('2') && JSON.stringify(schema).includes('"$ref":"Tokens"'))
}

// RFC 6749 §5.1: a reply with tokens in it is never stored by a browser or a proxy.
async function noStore (_request: FastifyRequest, reply: FastifyReply) {
  reply.header('cache-control', 'no-store')
  reply.header('pragma', 'no-cache')
}

async function emptyBody (request: FastifyRequest) {
  request.body ??= {}
}

/** The query parameters a route declares as integers. */
function integerParams (route: Pick<RouteOptions, 'schema'>): string[] {
  const properties = (route.schema?.querystring as { properties?: Record<string, { type?: unknown }> } | undefined)?.properties ?? {}
  return Object.entries(properties).filter(([, schema]) => schema.type === 'integer').map(([name]) => name)
}

// A query string holds only strings and bodies are never coerced, so the
// integers a route declares are read here: digits become a number, anything
// else stays a string and fails validation (400), as `?limit=2x` should.
const readIntegers = (names: string[]) => async (request: FastifyRequest) => {
  const query = request.query as Record<string, unknown>
  for (const name of names) {
    const value = query[name]
    if (typeof value === 'string' && /^-?[0-9]{1,15}$/.test(value)) query[name] = Number(value)
  }
}

/**
 * What every route gets from its declaration rather than from its handler:
 * `Cache-Control: no-store` when its replies carry tokens, an optional body
 * when its `config.optionalBody` says so, and its integer query parameters
 * read as numbers.
 */
export default fp(async (app) => {
  app.addHook('onRoute', (route) => {
    if (carriesTokens(route)) route.onRequest = [noStore, ...asArray(route.onRequest)] as RouteOptions['onRequest']
    if (route.config?.optionalBody) route.preValidation = [emptyBody, ...asArray(route.preValidation)] as RouteOptions['preValidation']
    const integers = integerParams(route)
    if (integers.length > 0) route.preValidation = [readIntegers(integers), ...asArray(route.preValidation)] as RouteOptions['preValidation']
  })
}, { name: 'http' })
