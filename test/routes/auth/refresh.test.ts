import t from 'tap'
import { authed, build, dbFault, refresh, register } from '../../helper.js'

t.test('rotation with blacklisting (the default)', async t => {
  const app = await build(t)
  const { tokens } = await register(app)

  const first = await refresh(app, tokens.refreshToken)
  t.equal(first.statusCode, 200)
  const next = first.json().tokens
  t.type(next.accessToken, 'string')
  t.type(next.refreshToken, 'string')
  t.not(next.refreshToken, tokens.refreshToken, 'a new refresh token')
  t.equal(next.tokenType, 'Bearer')
  t.equal(next.expiresIn, 300)
  t.ok(next.refreshExpiresIn > 86390 && next.refreshExpiresIn <= 86400, 'the new refresh token has a full lifetime')

  t.test('the new pair works', async t => {
    t.equal((await authed(app, next.accessToken, { url: '/profile' })).statusCode, 200)
  })

  t.test('a second tab presenting the old token within the interval gets the same successor', async t => {
    const again = await refresh(app, tokens.refreshToken)
    t.equal(again.statusCode, 200)
    t.equal(again.json().tokens.refreshToken, next.refreshToken)
    t.equal((await authed(app, again.json().tokens.accessToken, { url: '/profile' })).statusCode, 200)
  })
})

t.test('reusing a rotated token after the interval revokes the whole session', async t => {
  const app = await build(t, { REFRESH_REUSE_INTERVAL: '0' })
  const { tokens } = await register(app)
  const first = (await refresh(app, tokens.refreshToken)).json().tokens
  await new Promise(resolve => setTimeout(resolve, 5))

  const reuse = await refresh(app, tokens.refreshToken)
  t.equal(reuse.statusCode, 400)
  t.equal(reuse.json().code, 'refresh_reused')

  const access = await authed(app, first.accessToken, { url: '/profile' })
  t.equal(access.statusCode, 401, "the successor's access token dies")
  t.equal(access.json().code, 'token_revoked')
  t.equal((await authed(app, tokens.accessToken, { url: '/profile' })).statusCode, 401, 'the original access token dies')
  const successor = await refresh(app, first.refreshToken)
  t.equal(successor.statusCode, 400, 'the successor refresh token dies')
  t.equal(successor.json().code, 'token_revoked')
})

t.test('an older ancestor is theft even within the interval', async t => {
  const app = await build(t)
  const { tokens } = await register(app)
  const b = (await refresh(app, tokens.refreshToken)).json().tokens
  const c = (await refresh(app, b.refreshToken)).json().tokens

  const reuse = await refresh(app, tokens.refreshToken)
  t.equal(reuse.statusCode, 400)
  t.equal(reuse.json().code, 'refresh_reused')
  t.equal((await authed(app, c.accessToken, { url: '/profile' })).statusCode, 401, 'the live access token dies')
  t.equal((await refresh(app, c.refreshToken)).statusCode, 400, 'the live refresh token dies')
})

t.test('other sessions survive a theft in one session', async t => {
  const app = await build(t, { REFRESH_REUSE_INTERVAL: '0' })
  const account = await register(app)
  const other = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: account.email, password: 'correct horse battery staple' } })
  await refresh(app, account.tokens.refreshToken)
  await new Promise(resolve => setTimeout(resolve, 5))
  t.equal((await refresh(app, account.tokens.refreshToken)).json().code, 'refresh_reused')
  t.equal((await authed(app, other.json().tokens.accessToken, { url: '/profile' })).statusCode, 200)
})

t.test('rotation without blacklisting: the old token stays usable', async t => {
  const app = await build(t, { BLACKLIST_AFTER_ROTATION: 'false', REFRESH_REUSE_INTERVAL: '0' })
  const { tokens } = await register(app)
  const first = await refresh(app, tokens.refreshToken)
  t.equal(first.statusCode, 200)
  t.type(first.json().tokens.refreshToken, 'string')
  await new Promise(resolve => setTimeout(resolve, 5))
  const second = await refresh(app, tokens.refreshToken)
  t.equal(second.statusCode, 200, 'reusable until its own exp')
  t.not(second.json().tokens.refreshToken, first.json().tokens.refreshToken, 'each use gets a fresh refresh token')
  t.equal((await refresh(app, first.json().tokens.refreshToken)).statusCode, 200, 'and the new ones work')
})

t.test('no rotation: access token only, the refresh token is reused', async t => {
  const app = await build(t, { ROTATE_REFRESH_TOKENS: 'false' })
  const { tokens } = await register(app)
  for (let i = 0; i < 3; i++) {
    const res = await refresh(app, tokens.refreshToken)
    t.equal(res.statusCode, 200)
    const body = res.json().tokens
    t.type(body.accessToken, 'string')
    t.notOk('refreshToken' in body, 'no refresh token')
    t.notOk('refreshExpiresIn' in body, 'no refresh lifetime')
    t.equal((await authed(app, body.accessToken, { url: '/profile' })).statusCode, 200)
  }
})

t.test('20 concurrent refreshes of one token produce exactly one successor', async t => {
  const app = await build(t)
  const { id, tokens } = await register(app)
  const replies = await Promise.all(Array.from({ length: 20 }, () => refresh(app, tokens.refreshToken)))
  t.same(replies.map(r => r.statusCode), Array(20).fill(200), 'every tab is answered')
  const successors = new Set(replies.map(r => r.json().tokens.refreshToken))
  t.equal(successors.size, 1, 'one successor refresh token')

  const live = await app.db.selectFrom('refresh_tokens').select('jti')
    .where('user_id', '=', id).where('rotated_at', 'is', null).where('revoked_at', 'is', null)
    .execute()
  t.equal(live.length, 1, 'one live refresh token in the session')
  t.equal((await refresh(app, [...successors][0])).statusCode, 200, 'and it works')
})

t.test('refresh enforces version, revocation and disabled users', async t => {
  const app = await build(t)

  t.test('after logout: token_revoked', async t => {
    const { tokens } = await register(app)
    await authed(app, tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'global' } })
    const res = await refresh(app, tokens.refreshToken)
    t.equal(res.statusCode, 400)
    t.equal(res.json().code, 'token_revoked')
  })

  t.test('disabled user: account_disabled', async t => {
    const { id, tokens } = await register(app)
    await app.db.updateTable('users').set({ disabled_at: new Date() }).where('id', '=', id).execute()
    const res = await refresh(app, tokens.refreshToken)
    t.equal(res.statusCode, 400)
    t.equal(res.json().code, 'account_disabled')
  })

  t.test('user gone: token_revoked', async t => {
    const { id, tokens } = await register(app)
    await app.db.deleteFrom('users').where('id', '=', id).execute()
    const res = await refresh(app, tokens.refreshToken)
    t.equal(res.statusCode, 400)
    t.match(res.json().code, /^token_(revoked|invalid)$/)
  })

  t.test('an access token is not a refresh token', async t => {
    const { tokens } = await register(app)
    const res = await refresh(app, tokens.accessToken)
    t.equal(res.statusCode, 400)
    t.equal(res.json().code, 'token_invalid')
  })

  t.test('bad bodies: validation_failed', async t => {
    for (const payload of [{}, { refreshToken: '' }, { refreshToken: 42 }, { refreshToken: 'x', extra: 1 }]) {
      const res = await app.inject({ method: 'POST', url: '/auth/refresh', payload })
      t.equal(res.statusCode, 400, JSON.stringify(payload))
      t.equal(res.json().code, 'validation_failed')
    }
  })
})

t.test('a deadlock PostgreSQL reports in the middle of a refresh is retried, and the refresh answers as if none happened', async t => {
  const app = await build(t)
  const account = await register(app)
  // The successor's insert fails once with PostgreSQL's own deadlock error; the retry runs the refresh again.
  await dbFault(t, app.db, { table: 'refresh_tokens', userId: account.id, plpgsql: "if calls = 1 then raise exception 'injected deadlock' using errcode = 'deadlock_detected'; end if;" })
  const res = await refresh(app, account.tokens.refreshToken)
  t.equal(res.statusCode, 200)
  const next = res.json().tokens
  t.equal((await authed(app, next.accessToken, { url: '/profile' })).statusCode, 200, 'the new access token works')
  const rows = await app.db.selectFrom('refresh_tokens').select(['jti', 'successor_jti']).where('user_id', '=', account.id).orderBy('issued_at').execute()
  t.equal(rows.length, 2, 'one successor: the failed try left nothing')
  t.equal(rows.find(r => r.successor_jti !== null)?.successor_jti, app.tokens.decode(next.refreshToken)?.jti, 'and it is the one handed out')
  t.equal((await refresh(app, next.refreshToken)).statusCode, 200, 'the successor refreshes in turn')
})

t.test('a refresh that keeps failing to serialise answers 503 service_unavailable with Retry-After, and changes nothing', async t => {
  const lines: string[] = []
  const app = await build(t, { LOG_LEVEL: 'warn' }, { logStream: { write: line => { lines.push(line) } } })
  const account = await register(app)
  const remove = await dbFault(t, app.db, { table: 'refresh_tokens', userId: account.id, plpgsql: "raise exception 'injected' using errcode = 'serialization_failure';" })
  const res = await refresh(app, account.tokens.refreshToken)
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'service_unavailable')
  t.ok(Number(res.headers['retry-after']) > 0, 'with Retry-After')
  const logged = lines.map(line => JSON.parse(line)).find(entry => entry.msg === 'transaction failed after retries')
  t.equal(logged?.err?.code, '40001', "the log shows PostgreSQL's error code")
  await remove()
  t.equal((await refresh(app, account.tokens.refreshToken)).statusCode, 200, 'the token was never rotated: it still refreshes')
})
