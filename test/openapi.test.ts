import { readFileSync } from 'node:fs'
import t from 'tap'
import SwaggerParser from '@apidevtools/swagger-parser'
import { clientTypesPath, documentPath, generateClientTypes, generateDocument, serializeDocument } from '../openapi/generate.js'
import { errorCodes } from '../plugins/infra/errors.js'
import { build } from './helper.js'

interface Operation {
  operationId?: string
  tags?: string[]
  summary?: string
  security?: Array<Record<string, string[]>>
  requestBody?: { required?: boolean, content: Record<string, { example?: unknown }> }
  responses: Record<string, {
    description?: string
    content?: Record<string, { schema?: { $ref?: string, allOf?: unknown[] }, example?: { statusCode?: number, code?: string, message?: string } }>
  }>
}
type Document = { openapi: string, paths: Record<string, Record<string, Operation>>, components: Record<string, Record<string, any>> }

const methods = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options'])

const fresh = await generateDocument() as unknown as Document
const operations = Object.entries(fresh.paths).flatMap(([path, item]) =>
  Object.entries(item).filter(([method]) => methods.has(method)).map(([method, op]) => ({ name: `${method.toUpperCase()} ${path}`, op })))

t.test('the committed openapi/openapi.json is up to date', async t => {
  const committed = readFileSync(documentPath, 'utf8')
  t.same(JSON.parse(committed), fresh, 'openapi/openapi.json is stale: run `npm run openapi` and commit it')
  t.equal(committed, serializeDocument(fresh), 'openapi/openapi.json is formatted as `npm run openapi` writes it')
})

t.test("the client package's types (client/src/schema.ts) are generated from the document as it is", async t => {
  t.equal(readFileSync(clientTypesPath, 'utf8'), await generateClientTypes(fresh as unknown as Record<string, unknown>),
    'client/src/schema.ts is stale: run `npm run openapi` and commit it')
})

t.test('the document is valid OpenAPI 3', async t => {
  // The parser dereferences in place: it gets its own copy.
  const api = await SwaggerParser.validate(structuredClone(fresh) as never)
  t.match((api as { openapi?: string }).openapi, /^3\./)
})

t.test('every operation has an operationId, tags and a summary', async t => {
  t.ok(operations.length > 0, 'the document has operations')
  const ids = new Set<string>()
  for (const { name, op } of operations) {
    t.type(op.operationId, 'string', `${name} has an operationId`)
    t.notOk(ids.has(op.operationId as string), `${name}'s operationId ${op.operationId} is unique`)
    ids.add(op.operationId as string)
    t.ok(Array.isArray(op.tags) && op.tags.length > 0, `${name} has tags`)
    t.ok(typeof op.summary === 'string' && op.summary.length > 0, `${name} has a summary`)
  }
})

t.test('every response code has a schema, and errors have the error shape', async t => {
  for (const { name, op } of operations) {
    for (const [status, response] of Object.entries(op.responses)) {
      if (status === '204') {
        t.equal(response.content, undefined, `${name} ${status} has no body`)
        continue
      }
      // The revocation stream's 200 is Server-Sent Events, not JSON.
      const schema = response.content?.['application/json']?.schema ?? response.content?.['text/event-stream']?.schema
      t.ok(schema, `${name} ${status} has a JSON schema`)
      if (Number(status) >= 400) {
        t.same(schema?.allOf, [{ $ref: '#/components/schemas/Error' }], `${name} ${status} is the shared Error shape`)
      }
    }
  }
  t.ok(fresh.components.schemas.Error, 'the Error shape is a named component')
})

t.test('every response has a description; each error lists its codes and shows a real example (SPEC §13)', async t => {
  const codes = Object.keys(errorCodes)
  for (const { name, op } of operations) {
    for (const [status, response] of Object.entries(op.responses)) {
      t.ok(response.description && response.description !== 'Default Response', `${name} ${status} has a description of its own`)
      if (Number(status) < 400) continue
      const example = response.content?.['application/json']?.example ?? {}
      t.equal(example.statusCode, Number(status), `${name} ${status}: the example has this status`)
      t.ok(codes.includes(String(example.code)), `${name} ${status}: the example's code is from the §12 list`)
      t.equal(example.message, errorCodes[example.code as keyof typeof errorCodes]?.[1], `${name} ${status}: the example's message is the real one`)
      const listed = [...(response.description as string).matchAll(/`([a-z_]+)`/g)].map(m => m[1]).filter(c => c !== 'code')
      t.ok(listed.length > 0 && listed.every(c => codes.includes(c)), `${name} ${status} lists its codes: ${listed.join(', ')}`)
      t.ok(listed.includes(String(example.code)), `${name} ${status}: the example is one of them`)
    }
  }
})

t.test('optional bodies are optional: POST /auth/logout takes none; request bodies have examples', async t => {
  t.equal(fresh.paths['/auth/logout'].post.requestBody?.required, false)
  for (const { name, op } of operations) {
    if (name === 'POST /auth/logout' || !op.requestBody) continue
    t.equal(op.requestBody.required, true, `${name} needs its body`)
    t.type(op.requestBody.content['application/json'].example, 'object', `${name} has an example body`)
  }
})

t.test('the bearer scheme is declared and protected operations use it', async t => {
  t.same(fresh.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
  for (const { name, op } of operations) {
    for (const requirement of op.security ?? []) {
      for (const scheme of Object.keys(requirement)) {
        t.ok(scheme in fresh.components.securitySchemes, `${name} uses the declared scheme ${scheme}`)
      }
    }
  }
})

t.test('the running app serves the document at /docs/json and Swagger UI at /docs', async t => {
  const app = await build(t)
  const json = await app.inject({ url: '/docs/json' })
  t.equal(json.statusCode, 200)
  t.same(json.json(), fresh, '/docs/json is the generated document')
  const ui = await app.inject({ url: '/docs' })
  t.equal(ui.statusCode, 200)
  t.match(ui.headers['content-type'], /text\/html/)
  t.match(ui.body, /swagger-ui/i)
})
