import { request as httpRequest, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { authed, build, login, register, type App } from '../helper.js'

const feedToken = 'feed-token-feed-token-feed-token-0123'
const feed = { REVOCATION_FEED_TOKEN: feedToken }

const list = (app: App, after?: number, token: string | null = feedToken) => app.inject({
  url: `/revocations${after === undefined ? '' : `?after=${after}`}`,
  headers: token === null ? {} : { authorization: `Bearer ${token}` }
})

async function last (app: App): Promise<number> {
  const row = await app.db.selectFrom('revocation_counter').select('last').executeTakeFirstOrThrow()
  return Number(row.last)
}

interface SseEvent { id?: string, event?: string, data?: string }

/** An SSE subscriber over real HTTP: its events as they arrive, parsed. */
async function subscribe (app: App, headers: Record<string, string> = {}, query = '') {
  if (!app.server.listening) await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const events: SseEvent[] = []
  let waiting: (() => void) | undefined
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: `/revocations/stream${query}`, headers: { authorization: `Bearer ${feedToken}`, ...headers } })
    req.once('response', resolve).once('error', reject).end()
  })
  let buffer = ''
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => {
    buffer += chunk
    let end: number
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const event: SseEvent = {}
      for (const line of block.split('\n')) {
        const [field, ...rest] = line.split(': ')
        if (field === 'id' || field === 'event' || field === 'data') event[field] = rest.join(': ')
      }
      if (Object.keys(event).length > 0) events.push(event)
    }
    waiting?.()
  })
  return {
    res,
    events,
    /** Resolves once `count` events (resets included) have arrived. */
    async until (count: number) {
      while (events.length < count) await new Promise<void>(resolve => { waiting = resolve })
    },
    close: () => res.destroy()
  }
}

t.test('the feed answers 404 when REVOCATION_FEED_TOKEN is unset', async t => {
  const app = await build(t)
  for (const url of ['/revocations', '/revocations/stream']) {
    const res = await app.inject({ url, headers: { authorization: `Bearer ${feedToken}` } })
    t.equal(res.statusCode, 404, url)
    t.equal(res.json().code, 'not_found')
  }
})

t.test('the feed refuses a missing or wrong token', async t => {
  const app = await build(t, feed)
  const missing = await list(app, 0, null)
  t.equal(missing.statusCode, 401)
  t.equal(missing.json().code, 'token_missing')
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="latchkey"')
  for (const token of ['wrong', feedToken + 'x', feedToken.slice(0, -1)]) {
    const res = await list(app, 0, token)
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'token_invalid')
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  }
  const stream = await app.inject({ url: '/revocations/stream', headers: { authorization: 'Bearer wrong' } })
  t.equal(stream.statusCode, 401)
  t.equal((await app.inject({ url: '/revocations?after=abc', headers: { authorization: `Bearer ${feedToken}` } })).statusCode, 400, 'a bad after is a 400')
})

t.test('logouts, revoked sessions and password changes are listed with ids, kinds and versions only', async t => {
  const app = await build(t, feed)
  const before = await last(app)
  const account = await register(app)
  const phone = await login(app, account.email, 'phone')
  const phoneSid = JSON.parse(Buffer.from(phone.accessToken.split('.')[1], 'base64url').toString()).sid
  t.equal((await authed(app, phone.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204)
  t.equal((await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)

  const res = await list(app, before)
  t.equal(res.statusCode, 200)
  const body = res.json()
  const mine = body.events.filter((e: { id: string }) => e.id === account.id || e.id === phoneSid)
  t.match(mine, [
    { kind: 'session', id: phoneSid },
    { kind: 'user', id: account.id, tokenVersion: 1 }
  ])
  for (const event of body.events) {
    t.same(Object.keys(event).sort(), event.kind === 'user' ? ['at', 'id', 'kind', 'seq', 'tokenVersion'] : ['at', 'id', 'kind', 'seq'], 'nothing but ids, kinds and versions')
  }
  t.notOk(res.body.includes(account.email), 'never the email')
  const seqs = body.events.map((e: { seq: number }) => e.seq)
  t.same(seqs, seqs.map((_: number, i: number) => before + 1 + i), 'gapless from after')
  t.equal(body.last, seqs.at(-1))
  t.notOk('reset' in body)
  t.same((await list(app, body.last)).json(), { events: [], last: body.last }, 'nothing after the last')
})

t.test('an after older than what is kept answers from the oldest kept with reset', async t => {
  const app = await build(t, feed)
  const account = await register(app)
  await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  await register(app).then(a => authed(app, a.tokens.accessToken, { method: 'POST', url: '/auth/logout' }))
  const top = await last(app)
  // The oldest event goes, as the periodic flush does with events past their keeping.
  await app.db.deleteFrom('revocations').where('seq', '<', top).execute()
  const res = (await list(app, 0)).json()
  t.equal(res.reset, true)
  t.equal(res.events[0].seq, top)
  t.equal(res.last, top)
  const unknown = (await list(app, top + 1000)).json()
  t.equal(unknown.reset, true, 'a number never given is a reset too')
  t.equal(unknown.events[0].seq, top)
})

t.test('the stream delivers revocations as they commit and resumes after Last-Event-ID', async t => {
  const app = await build(t, feed)
  const start = await last(app)
  const first = await subscribe(app, {}, `?after=${start}`)
  t.teardown(first.close)
  t.equal(first.res.statusCode, 200)
  t.match(first.res.headers['content-type'], /^text\/event-stream/)

  const a = await register(app)
  t.equal((await authed(app, a.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
  await first.until(2)
  t.match(first.events, [
    { id: String(start + 1), event: 'revocation' },
    { id: String(start + 2), event: 'revocation' }
  ])
  t.match(JSON.parse(first.events[0].data ?? ''), { seq: start + 1, kind: 'user', id: a.id, tokenVersion: 1 })
  first.close()

  // Missed while disconnected, delivered on resume.
  const b = await register(app)
  await authed(app, b.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  const resumed = await subscribe(app, { 'last-event-id': String(start + 2) })
  t.teardown(resumed.close)
  await resumed.until(2)
  t.same(resumed.events.map(e => e.id), [String(start + 3), String(start + 4)])
  t.match(JSON.parse(resumed.events[0].data ?? ''), { id: b.id })
})

t.test('the stream says reset first when resuming before what is kept', async t => {
  const app = await build(t, feed)
  const a = await register(app)
  await authed(app, a.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  const top = await last(app)
  await app.db.deleteFrom('revocations').where('seq', '<', top).execute()
  const sub = await subscribe(app, { 'last-event-id': '0' })
  t.teardown(sub.close)
  await sub.until(2)
  t.equal(sub.events[0].event, 'reset')
  t.equal(sub.events[1].id, String(top))
})

t.test('hundreds of idle subscribers, some never reading, do not hold up the others or the close', async t => {
  const app = await build(t, feed)
  const start = await last(app)
  const idle = await Promise.all(Array.from({ length: 200 }, () => subscribe(app, {}, `?after=${start}`)))
  // These never read: their sockets fill, the server waits on them without buffering.
  for (const sub of idle.slice(0, 50)) sub.res.pause()
  t.teardown(() => { for (const sub of idle) sub.close() })
  const a = await register(app)
  await authed(app, a.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
  await Promise.all(idle.slice(50).map(sub => sub.until(2)))
  t.ok(idle.slice(50).every(sub => sub.events[0].id === String(start + 1)), 'every reading subscriber got the events')
  await t.resolves(app.close(), 'the app closes with the streams open')
})
