import t from 'tap'
import { flushExpired } from '../../../db/retention.js'
import { build, eventually, login, refresh, register, type App } from '../../helper.js'

async function expire (app: App, userId: string) {
  const past = new Date(Date.now() - 1000)
  await app.db.updateTable('refresh_tokens').set({ expires_at: past }).where('user_id', '=', userId).execute()
  await app.db.updateTable('sessions').set({ expires_at: past }).where('user_id', '=', userId).execute()
}

const count = async (app: App, userId: string) => ({
  sessions: (await app.db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute()).length,
  refreshTokens: (await app.db.selectFrom('refresh_tokens').select('jti').where('user_id', '=', userId).execute()).length
})

t.test('flushExpired deletes expired tokens and sessions in batches, and nothing live', async t => {
  const app = await build(t, { FLUSH_EXPIRED_INTERVAL: '0' })
  const gone = await register(app)
  for (let i = 0; i < 3; i++) await login(app, gone.email)
  const kept = await register(app)
  await expire(app, gone.id)

  const counts = await flushExpired(app.db, { auditRetention: 0 }, 2)
  t.ok(counts.refreshTokens >= 4, 'the expired refresh tokens went, over several batches')
  t.ok(counts.sessions >= 4, 'the expired sessions went')
  t.same(await count(app, gone.id), { sessions: 0, refreshTokens: 0 })
  t.same(await count(app, kept.id), { sessions: 1, refreshTokens: 1 }, 'live rows stay')
  t.equal((await refresh(app, kept.tokens.refreshToken)).statusCode, 200, 'and still work')
})

t.test('the periodic job flushes on its own', async t => {
  const app = await build(t, { FLUSH_EXPIRED_INTERVAL: '1s' })
  const gone = await register(app)
  await expire(app, gone.id)
  // Waits on the job's effect, not on a guess of when a loaded machine runs it.
  const flushed = async () => { const left = await count(app, gone.id); return left.sessions + left.refreshTokens === 0 }
  t.ok(await eventually(flushed, 20_000), 'the expired rows went without a call')
})

t.test('audit events older than AUDIT_RETENTION are deleted, newer ones kept', async t => {
  const app = await build(t, { FLUSH_EXPIRED_INTERVAL: '0', AUDIT_RETENTION: '90d' })
  const account = await register(app)
  const day = 24 * 60 * 60 * 1000
  for (const [type, age] of [['login.succeeded', 91 * day], ['logout', 89 * day]] as const) {
    await app.db.insertInto('audit_events').values({ type, user_id: account.id, at: new Date(Date.now() - age), detail: '{}' }).execute()
  }
  const counts = await flushExpired(app.db, { auditRetention: app.config.AUDIT_RETENTION })
  t.ok(counts.auditEvents >= 1, 'the old event went')
  const left = await app.db.selectFrom('audit_events').select('type').where('user_id', '=', account.id).orderBy('id').execute()
  t.same(left.map(e => e.type), ['user.registered', 'logout'], 'the recent ones stay')

  await app.db.insertInto('audit_events').values({ type: 'login.failed', user_id: account.id, at: new Date(Date.now() - 400 * day), detail: '{}' }).execute()
  await flushExpired(app.db, { auditRetention: 0 })
  t.equal((await app.db.selectFrom('audit_events').select('id').where('user_id', '=', account.id).execute()).length, 3, 'AUDIT_RETENTION=0 keeps everything')
})
