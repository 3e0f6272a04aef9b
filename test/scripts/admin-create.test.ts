import { execFile } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { buildApp } from '../../app.js'
import { password, realBackends, testEnv, uniqueEmail } from '../helper.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

// Each run of the script starts its own process and opens the embedded database from disk: slow on a loaded machine.
t.setTimeout(600_000)

t.test(`npm run admin:create on ${realBackends ? 'PostgreSQL' : 'a fresh embedded database'}: creates, then promotes, never duplicates`, async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'latchkey-admin-'))
  // The server's environment, as an operator's shell would have it: the run's backends when set.
  const env = testEnv({ DATA_DIR: dataDir })
  const script = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/admin-create.ts', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, ...Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)), LOG_LEVEL: 'warn' },
    timeout: 90_000
  })
  // Opens the same database as the script, between its runs (the embedded one is one process's at a time).
  const withApp = async <T>(work: (app: Awaited<ReturnType<typeof buildApp>>) => Promise<T>): Promise<T> => {
    const app = await buildApp({ env })
    try {
      return await work(app)
    } finally {
      await app.close()
    }
  }
  const loginAs = (app: Awaited<ReturnType<typeof buildApp>>, email: string, pass = password) =>
    app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: pass } })

  const email = uniqueEmail('operator')
  const created = await script('--email', email, '--password', password)
  t.match(created.stdout, `created admin ${email}`)
  t.match((await script('--email', email.toUpperCase(), '--password', password)).stdout, 'is already an admin; nothing changed', 'idempotent')

  const { plain, oldToken } = await withApp(async app => {
    const res = await loginAs(app, email)
    t.equal(res.statusCode, 200, 'the admin logs in')
    t.match(res.json().user, { role: 'admin', emailVerified: true }, 'as admin, its email counted as verified')
    t.equal((await app.inject({ url: '/admin/users?limit=1', headers: { authorization: `Bearer ${res.json().tokens.accessToken}` } })).statusCode, 200)
    const plain = uniqueEmail('promoted')
    const registered = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: plain, password } })
    return { plain, oldToken: registered.json().tokens.accessToken as string }
  })

  t.match((await script('--email', plain, '--password', 'whatever it may be')).stdout, `promoted ${plain}`)
  await withApp(async app => {
    const rows = await app.db.selectFrom('users').select(['role']).where('email', '=', plain).execute()
    t.same(rows, [{ role: 'admin' }], 'promoted, not duplicated')
    t.equal((await app.inject({ url: '/profile', headers: { authorization: `Bearer ${oldToken}` } })).json().code, 'token_revoked', 'its old tokens died')
    t.equal((await loginAs(app, plain)).json().user.role, 'admin', 'its own password still works, now as admin')
    const { id } = await app.db.selectFrom('users').select('id').where('email', '=', plain).executeTakeFirstOrThrow()
    const events = await app.db.selectFrom('audit_events').select(['type', 'detail']).where('user_id', '=', id).execute()
    t.ok(events.some(e => e.type === 'user.role_changed' && e.detail.by === 'operator'), 'the promotion is in the audit trail')
  })

  // Refused before the database is opened: nothing is created.
  const refusals: Array<[string[], RegExp]> = [
    [['--email', uniqueEmail('weak'), '--password', 'short'], /password must be 8 to 128 characters/],
    [['--email', 'not-an-email', '--password', password], /"not-an-email" is not an email address/],
    [['--email', uniqueEmail('half')], /usage: npm run admin:create -- --email <email> --password <password>/],
    [['--email', uniqueEmail('odd'), '--password', password, '--role', 'root'], /Unknown option '--role'/]
  ]
  for (const [args, message] of refusals) {
    const err = await script(...args).then(() => ({ code: 0, stderr: '' }), (e: { code: number, stderr: string }) => e)
    t.equal(err.code, 1, args.join(' '))
    t.match(err.stderr, message)
    t.notMatch(err.stderr, /\n\s+at /, 'a sentence, not a stack trace')
  }
})
