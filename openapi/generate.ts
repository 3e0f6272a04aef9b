import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import openapiTS, { astToString, type OpenAPI3 } from 'openapi-typescript'
import { buildApp } from '../app.js'

export const documentPath = fileURLToPath(new URL('openapi.json', import.meta.url))
/** The client package's types, generated from the document. */
export const clientTypesPath = fileURLToPath(new URL('../client/src/schema.ts', import.meta.url))

/**
 * The OpenAPI document of the routes as they are. The app is built with the
 * embedded defaults and a fixed environment, never the caller's, so the same
 * sources always give the same document.
 */
export async function generateDocument (): Promise<Record<string, unknown>> {
  const dataDir = mkdtempSync(join(tmpdir(), 'latchkey-openapi-'))
  const app = await buildApp({
    env: {
      DATA_DIR: dataDir,
      LOG_LEVEL: 'silent',
      JWT_SECRET: 'openapi-generation-only-secret-0123456789',
      // The document does not depend on the database: nothing is opened at all.
      MIGRATE_ON_START: 'false'
    }
  })
  try {
    await app.ready()
    return app.swagger() as unknown as Record<string, unknown>
  } finally {
    await app.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** The document as `openapi.json` holds it: two-space indents and a final newline. */
export function serializeDocument (document: unknown): string {
  return JSON.stringify(document, null, 2) + '\n'
}

/** `client/src/schema.ts`: the document's types, by openapi-typescript, as `npm run openapi` writes them. */
export async function generateClientTypes (document: Record<string, unknown>): Promise<string> {
  const ast = await openapiTS(document as unknown as OpenAPI3)
  return '// Generated from openapi/openapi.json by `npm run openapi` (openapi-typescript): do not edit.\n\n' + astToString(ast)
}

// `npm run openapi`
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const document = await generateDocument()
  writeFileSync(documentPath, serializeDocument(document))
  console.log(`wrote ${documentPath}`)
  writeFileSync(clientTypesPath, await generateClientTypes(document))
  console.log(`wrote ${clientTypesPath}`)
}
