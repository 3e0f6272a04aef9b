import { fileURLToPath } from 'node:url'
import { builtinModules } from 'node:module'
import t from 'tap'
import { build } from 'esbuild'
import { password, serve, uniqueEmail } from './helper.js'

const entry = fileURLToPath(new URL('../src/index.ts', import.meta.url))

// What a browser app's bundler does with the package: resolve everything for
// a browser target, with no Node shims. A Node-only import fails the build.
const bundled = await build({
  entryPoints: [entry],
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  write: false,
  metafile: true,
  logLevel: 'silent'
})
const code = bundled.outputFiles[0].text

t.test('the package bundles for a browser target', async t => {
  t.same(bundled.errors, [])
  t.same(bundled.warnings, [])
  const builtins = new Set(builtinModules.flatMap(m => [m, `node:${m}`]))
  const imported = Object.values(bundled.metafile.inputs).flatMap(input => input.imports.map(i => i.path))
  t.same(imported.filter(path => builtins.has(path) || path.startsWith('node:')), [], 'no Node built-in is imported')
  t.same(Object.keys(bundled.metafile.inputs).filter(path => !path.startsWith('client/src/') && !path.includes('node_modules/openapi-fetch/')), [],
    'the bundle holds the package and openapi-fetch, nothing else')
  // openapi-fetch looks for `process` behind a typeof guard; nothing else of Node's is named.
  t.notMatch(code, /\brequire\(|\bBuffer\b|\b__dirname\b|["']node:/, 'no require, Buffer or node: specifier in the code')
})

t.test('the bundle works: it drives a real latchkey', async t => {
  const { baseUrl } = await serve(t)
  const { createLatchkey } = await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`)
  const latchkey = createLatchkey({ baseUrl })
  const email = uniqueEmail()
  await latchkey.register({ email, password })
  const profile = await latchkey.api.GET('/profile')
  t.equal(profile.response.status, 200)
  t.equal(profile.data.email, email)
})
