import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { realBackends, uniqueEmail } from './helper.js'
import { listening, startServer } from './server-process.js'
import { nodeFlags } from '../bench/node-flags.js'

// `npm run build` then `npm run start:prod` (SPEC §3): the compiled server,
// with no TypeScript loader, serves and migrates from dist/ alone. Compiled
// once into a directory of its own, so a developer's dist/ is left alone; its
// node_modules is the checkout's, as next to a real dist/.
const root = fileURLToPath(new URL('..', import.meta.url))
const out = mkdtempSync(join(tmpdir(), 'latchkey-build-'))
symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'), 'dir')
const dist = join(out, 'dist')
t.teardown(() => rmSync(out, { recursive: true, force: true }))

t.test('the compiled server starts with plain node, applies the compiled migrations and serves', async t => {
  await promisify(execFile)(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', dist], { cwd: root })
  t.ok(existsSync(join(dist, 'server.js')), 'dist/server.js is built')
  t.same(readdirSync(join(dist, 'db/migrations')).filter(name => name.endsWith('.js')),
    readdirSync(join(root, 'db/migrations')).filter(name => name.endsWith('.ts')).map(name => name.replace(/\.ts$/, '.js')),
    'every migration is compiled next to migrate.js')
  t.notOk(existsSync(join(dist, 'test')) || existsSync(join(dist, 'bench/run.js')), 'the tests and the load generator stay out of the build')

  // As production runs it, on real backends; embedded otherwise (production refuses PGlite).
  const production = realBackends
    ? { NODE_ENV: 'production', JWT_SECRET: 'build-test-secret-build-test-secret-0001', APP_SECRET: 'build-test-app-secret-build-test-0001', SMTP_URL: 'smtp://127.0.0.1:2' }
    : { DATA_DIR: mkdtempSync(join(tmpdir(), 'latchkey-build-data-')) }
  const server = await startServer(t, production, [...nodeFlags('start:prod'), join(dist, 'server.js')])
  await listening(server)
  t.notMatch(server.output(), /tsx/, 'no TypeScript loader is involved')
  if (!realBackends) t.match(server.output(), /migrations applied/, 'a new database is migrated by the compiled migrations')

  const base = `http://127.0.0.1:${server.port}`
  t.equal((await fetch(`${base}/health`)).status, 200, '/health answers 200')
  t.equal((await fetch(`${base}/ready`)).status, 200, '/ready answers 200')
  const registered = await fetch(`${base}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: uniqueEmail('build'), password: 'correct horse battery staple' })
  })
  t.equal(registered.status, 201, 'the autoloaded routes are there')
  const { tokens } = await registered.json() as { tokens: { accessToken: string } }
  const profile = await fetch(`${base}/profile`, { headers: { authorization: `Bearer ${tokens.accessToken}` } })
  t.equal(profile.status, 200, 'and authentication works')

  server.child.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null }, 'SIGTERM ends it with exit code 0')
})
