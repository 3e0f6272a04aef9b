import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { flushExpired } from '../../../db/retention.js'
import { build, login, refresh, register, type App } from '../../helper.js'

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
  await sleep(1500)
  t.same(await count(app, gone.id), { sessions: 0, refreshTokens: 0 })
})
