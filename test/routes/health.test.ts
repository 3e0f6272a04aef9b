import t from 'tap'
import { build } from '../helper.js'

t.test('GET /health answers while the process is up', async t => {
  const app = await build(t)
  const res = await app.inject({ url: '/health' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ok' })
})

t.test('GET /ready answers 200 when the database and the cache are reachable', async t => {
  const app = await build(t)
  const res = await app.inject({ url: '/ready' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ok', database: 'ok', cache: 'ok' })
})
