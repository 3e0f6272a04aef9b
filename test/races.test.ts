import t, { type Test } from 'tap'
import { build, lastCode, login, password, realBackends, refresh, register, registerVerified, startSmtp, uniqueEmail, type App, type Tokens } from './helper.js'
import { race, tally, type Reply, type Shot } from './race.js'

// The embedded database runs one transaction at a time: nothing can overlap there.
const skip = realBackends ? false : 'needs PostgreSQL: the embedded database runs one transaction at a time'

const refreshShot = (refreshToken: string | undefined): Shot => ({ url: '/auth/refresh', payload: { refreshToken } })
const tokensOf = (replies: Reply[]): Tokens[] => replies.filter(r => r.status === 200 && r.body?.tokens).map(r => r.body.tokens)
const fiveHundreds = (replies: Reply[]) => replies.filter(r => r.status >= 500)

/** Every given token is dead: refresh tokens by the read-only verify (which never counts as reuse), access tokens on a protected route too. */
async function allDead (t: Test, app: App, tokens: Tokens[], label: string) {
  let alive = 0
  for (const { accessToken, refreshToken } of tokens) {
    for (const token of [accessToken, refreshToken]) {
      if (token === undefined) continue
      if ((await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token } })).statusCode !== 401) alive++
    }
    if ((await app.inject({ url: '/profile', headers: { authorization: `Bearer ${accessToken}` } })).statusCode !== 401) alive++
  }
  t.equal(alive, 0, `${label}: no token of the session works`)
}

/** A fresh session of the account whose first refresh token has already been rotated once. */
async function rotatedOnce (app: App, email: string): Promise<{ first: Tokens, second: Tokens }> {
  const first = await login(app, email)
  const res = await refresh(app, first.refreshToken)
  if (res.statusCode !== 200) throw new Error(`refresh: ${res.statusCode} ${res.body}`)
  return { first, second: res.json().tokens }
}

t.test('a stale and the current refresh token of one session, together, 50 rounds: theft always wins', { skip }, async t => {
  // Every rotated token is stale at once: no reuse interval.
  const app = await build(t, { REFRESH_REUSE_INTERVAL: '0' })
  const { email } = await register(app)
  const all: Reply[] = []
  for (let round = 1; round <= 50; round++) {
    const { first, second } = await rotatedOnce(app, email)
    const [stale, current] = await race(app, [refreshShot(first.refreshToken), refreshShot(second.refreshToken)])
    all.push(stale, current)
    t.same([stale.status, stale.body?.code], [400, 'refresh_reused'], `round ${round}: the stale token is reuse`)
    t.ok(current.status === 200 || (current.status === 400 && current.body?.code === 'token_revoked'), `round ${round}: the current one is 200 or token_revoked (${current.status} ${current.body?.code})`)
    await allDead(t, app, [first, second, ...tokensOf([current])], `round ${round}`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('20 concurrent refreshes of one token: one successor, handed to all of them', { skip }, async t => {
  const app = await build(t)
  const { email } = await register(app)
  const tokens = await login(app, email)
  const replies = await race(app, Array.from({ length: 20 }, () => refreshShot(tokens.refreshToken)))
  t.same(fiveHundreds(replies), [], 'no 5xx')
  t.same(replies.map(r => r.status), Array(20).fill(200), 'every one is 200 (inside the reuse interval)')
  const successors = new Set(tokensOf(replies).map(p => app.tokens.decode(p.refreshToken as string)?.jti))
  t.equal(successors.size, 1, 'exactly one successor')
  const sid = app.tokens.decode(tokens.refreshToken as string)?.sid as string
  const rows = await app.db.selectFrom('refresh_tokens').select('jti').where('session_id', '=', sid).execute()
  t.equal(rows.length, 2, 'the session holds the first token and its one successor')
  t.comment(`replies: ${JSON.stringify(tally(replies))}`)
})

t.test('20 concurrent refreshes racing a logout of the session: after the 204 no token of it works', { skip }, async t => {
  const app = await build(t)
  const { email } = await register(app)
  const all: Reply[] = []
  for (let round = 1; round <= 10; round++) {
    const tokens = await login(app, email)
    const replies = await race(app, [
      ...Array.from({ length: 20 }, () => refreshShot(tokens.refreshToken)),
      { url: '/auth/logout', payload: { scope: 'local' }, accessToken: tokens.accessToken }
    ])
    all.push(...replies)
    const logout = replies.at(-1) as Reply
    t.equal(logout.status, 204, `round ${round}: logged out`)
    t.ok(replies.slice(0, -1).every(r => r.status === 200 || (r.status === 400 && r.body?.code === 'token_revoked')), `round ${round}: refreshes are 200 or token_revoked`)
    await allDead(t, app, [tokens, ...tokensOf(replies)], `round ${round}`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('logout (every scope) and DELETE /sessions/:id racing refreshes of the session, 40 rounds', { skip }, async t => {
  const app = await build(t)
  const { email } = await register(app)
  const kinds = ['global', 'local', 'others', 'delete'] as const
  const all: Reply[] = []
  for (let round = 1; round <= 40; round++) {
    const kind = kinds[round % kinds.length]
    const target = await login(app, email, 'target')
    const other = await login(app, email, 'other')
    const sid = app.tokens.decode(target.accessToken)?.sid as string
    const ending: Shot = kind === 'delete'
      ? { method: 'DELETE', url: `/sessions/${sid}`, accessToken: other.accessToken }
      : { url: '/auth/logout', payload: { scope: kind }, accessToken: (kind === 'others' ? other : target).accessToken }
    const replies = await race(app, [refreshShot(target.refreshToken), refreshShot(target.refreshToken), refreshShot(target.refreshToken), ending])
    all.push(...replies)
    t.equal(replies[3].status, 204, `round ${round} (${kind}): the session was ended`)
    t.ok(replies.slice(0, 3).every(r => r.status === 200 || (r.status === 400 && r.body?.code === 'token_revoked')), `round ${round} (${kind}): refreshes are 200 or token_revoked`)
    await allDead(t, app, [target, ...tokensOf(replies.slice(0, 3))], `round ${round} (${kind})`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('two stale tokens of one session together: theft detected every round', { skip }, async t => {
  const app = await build(t, { REFRESH_REUSE_INTERVAL: '0' })
  const { email } = await register(app)
  const all: Reply[] = []
  for (let round = 1; round <= 20; round++) {
    const { first, second } = await rotatedOnce(app, email)
    const third = (await refresh(app, second.refreshToken)).json().tokens as Tokens
    const replies = await race(app, [refreshShot(first.refreshToken), refreshShot(second.refreshToken)])
    all.push(...replies)
    t.ok(replies.some(r => r.status === 400 && r.body?.code === 'refresh_reused'), `round ${round}: reuse detected`)
    t.ok(replies.every(r => r.status === 400 && ['refresh_reused', 'token_revoked'].includes(r.body?.code)), `round ${round}: both refused`)
    await allDead(t, app, [first, second, third], `round ${round}`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('an older ancestor inside the reuse interval together with the current token: theft detected every round', { skip }, async t => {
  const app = await build(t)
  const { email } = await register(app)
  const all: Reply[] = []
  for (let round = 1; round <= 20; round++) {
    const { first, second } = await rotatedOnce(app, email)
    const third = (await refresh(app, second.refreshToken)).json().tokens as Tokens
    const [ancestor, current] = await race(app, [refreshShot(first.refreshToken), refreshShot(third.refreshToken)])
    all.push(ancestor, current)
    t.same([ancestor.status, ancestor.body?.code], [400, 'refresh_reused'], `round ${round}: the ancestor is reuse`)
    t.ok(current.status === 200 || (current.status === 400 && current.body?.code === 'token_revoked'), `round ${round}: the current one is 200 or token_revoked`)
    await allDead(t, app, [first, second, third, ...tokensOf([current])], `round ${round}`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('a password change racing 10 refreshes: the new pair works, every earlier token is dead', { skip }, async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const all: Reply[] = []
  for (let round = 1; round <= 10; round++) {
    const { tokens } = await registerVerified(app, smtp)
    const replies = await race(app, [
      { url: '/auth/password/change', payload: { currentPassword: password, newPassword: `${password} 2` }, accessToken: tokens.accessToken },
      ...Array.from({ length: 10 }, () => refreshShot(tokens.refreshToken))
    ])
    all.push(...replies)
    const [change, ...refreshes] = replies
    t.equal(change.status, 200, `round ${round}: changed`)
    t.ok(refreshes.every(r => r.status === 200 || (r.status === 400 && r.body?.code === 'token_revoked')), `round ${round}: refreshes are 200 or token_revoked`)
    await allDead(t, app, [tokens, ...tokensOf(refreshes)], `round ${round}: the earlier tokens`)
    const fresh = change.body.tokens as Tokens
    t.equal((await app.inject({ url: '/profile', headers: { authorization: `Bearer ${fresh.accessToken}` } })).statusCode, 200, `round ${round}: the new access token works`)
    t.equal((await refresh(app, fresh.refreshToken)).statusCode, 200, `round ${round}: the new refresh token works`)
  }
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('a password reset racing logins with the old password: a login fails or its session is ended, never a stray session', { skip }, async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const all: Reply[] = []
  let stray = 0
  for (let round = 1; round <= 10; round++) {
    const account = await registerVerified(app, smtp)
    t.equal((await app.inject({ method: 'POST', url: '/auth/password/forgot', payload: { email: account.email } })).statusCode, 202)
    const code = await lastCode(app, smtp, account.email)
    const replies = await race(app, [
      { url: '/auth/password/reset', payload: { email: account.email, code, newPassword: `${password} 2` } },
      ...Array.from({ length: 5 }, () => ({ url: '/auth/login', payload: { email: account.email, password } }))
    ])
    all.push(...replies)
    const [reset, ...logins] = replies
    t.equal(reset.status, 204, `round ${round}: reset`)
    t.ok(logins.every(r => r.status === 200 || (r.status === 401 && r.body?.code === 'invalid_credentials')), `round ${round}: logins are 200 or invalid_credentials`)
    const open = await app.db.selectFrom('sessions').select('id').where('user_id', '=', account.id).where('revoked_at', 'is', null).execute()
    stray += open.length
    t.equal(open.length, 0, `round ${round}: the reset ended every session, those the racing logins opened too`)
    await allDead(t, app, [account.tokens, ...tokensOf(logins)], `round ${round}`)
  }
  t.equal(stray, 0, 'no stray session in any round')
  t.same(fiveHundreds(all), [], 'no 5xx')
  t.comment(`replies: ${JSON.stringify(tally(all))}`)
})

t.test('20 concurrent registrations of one email: one 201, the rest 409, one row', { skip }, async t => {
  const app = await build(t)
  const email = uniqueEmail('register-race')
  const replies = await race(app, Array.from({ length: 20 }, () => ({ url: '/auth/register', payload: { email, password } })))
  t.same(fiveHundreds(replies), [], 'no 5xx')
  t.equal(replies.filter(r => r.status === 201).length, 1, 'one account created')
  t.equal(replies.filter(r => r.status === 409 && r.body?.code === 'email_taken').length, 19, 'the rest are email_taken')
  const rows = await app.db.selectFrom('users').select('id').where('email', '=', email).execute()
  t.equal(rows.length, 1, 'one row')
  t.comment(`replies: ${JSON.stringify(tally(replies))}`)
})

t.test('the right email code sent 10 times at once: one success', { skip }, async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url })
  const account = await register(app)
  const code = await lastCode(app, smtp, account.email)
  const replies = await race(app, Array.from({ length: 10 }, () => ({ url: '/auth/email/verify', payload: { email: account.email, code } })))
  t.same(fiveHundreds(replies), [], 'no 5xx')
  t.equal(replies.filter(r => r.status === 200).length, 1, 'one success')
  t.equal(replies.filter(r => r.status === 400 && r.body?.code === 'otp_invalid').length, 9, 'the rest otp_invalid')
  const user = await app.db.selectFrom('users').select('email_verified_at').where('id', '=', account.id).executeTakeFirstOrThrow()
  t.ok(user.email_verified_at, 'verified')
  t.comment(`replies: ${JSON.stringify(tally(replies))}`)
})

t.test('10 concurrent wrong codes against OTP_MAX_ATTEMPTS=5: no more than 5 counted before the code dies', { skip }, async t => {
  const smtp = await startSmtp(t)
  const app = await build(t, { SMTP_URL: smtp.url, OTP_MAX_ATTEMPTS: '5' })
  const account = await register(app)
  const code = await lastCode(app, smtp, account.email)
  const wrong = code === '000000' ? '000001' : '000000'
  const replies = await race(app, Array.from({ length: 10 }, () => ({ url: '/auth/email/verify', payload: { email: account.email, code: wrong } })))
  t.same(fiveHundreds(replies), [], 'no 5xx')
  t.ok(replies.every(r => r.status === 400 && r.body?.code === 'otp_invalid'), 'every one otp_invalid')
  const row = await app.db.selectFrom('email_codes').select(['attempts', 'voided_at']).where('user_id', '=', account.id).executeTakeFirstOrThrow()
  t.equal(row.attempts, 5, 'five counted')
  t.ok(row.voided_at, 'and the code died')
  const failures = await app.db.selectFrom('email_code_failures').select('id').where('user_id', '=', account.id).execute()
  t.equal(failures.length, 5, 'five failures recorded')
  const right = await app.inject({ method: 'POST', url: '/auth/email/verify', payload: { email: account.email, code } })
  t.equal(right.json().code, 'otp_invalid', 'the right code no longer works')
})
