import t from 'tap'
import { authed, build, login, refresh, register, type App } from '../../helper.js'

const verify = (app: App, payload: unknown) => app.inject({ method: 'POST', url: '/auth/token/verify', payload: payload as object })
const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))

t.test('POST /auth/token/verify', async t => {
  const app = await build(t)

  t.test('a valid access token', async t => {
    const account = await register(app)
    const { sid, exp } = claims(account.tokens.accessToken)
    const res = await verify(app, { token: account.tokens.accessToken })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { valid: true, type: 'access', sub: account.id, sid, exp, bound: false })
  })

  t.test('a valid refresh token', async t => {
    const account = await register(app)
    const token = account.tokens.refreshToken as string
    const { sid, exp } = claims(token)
    const res = await verify(app, { token })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { valid: true, type: 'refresh', sub: account.id, sid, exp, bound: false })
    t.equal((await refresh(app, token)).statusCode, 200, 'verifying did not use the token up')
  })

  t.test('a rotated refresh token is revoked', async t => {
    const account = await register(app)
    const rotated = await refresh(app, account.tokens.refreshToken)
    t.equal(rotated.statusCode, 200)
    const res = await verify(app, { token: account.tokens.refreshToken })
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'token_revoked')
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey"', 'a 401 carries a challenge (RFC 9110); no Authorization header was sent')
    const successor = await verify(app, { token: rotated.json().tokens.refreshToken })
    t.equal(successor.statusCode, 200, 'its successor is valid')
    t.equal(successor.json().type, 'refresh')
  })

  t.test('after a global logout, the old tokens are revoked', async t => {
    const account = await register(app)
    const phone = await login(app, account.email, 'phone')
    t.equal((await verify(app, { token: account.tokens.accessToken })).statusCode, 200, 'valid before')
    t.equal((await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
    for (const [name, token] of [
      ['access', account.tokens.accessToken],
      ['refresh', account.tokens.refreshToken],
      ["the other device's access", phone.accessToken],
      ["the other device's refresh", phone.refreshToken]
    ] as const) {
      const res = await verify(app, { token })
      t.equal(res.statusCode, 401, name)
      t.equal(res.json().code, 'token_revoked', name)
    }
  })

  t.test('after a local logout, only that session is revoked', async t => {
    const account = await register(app)
    const phone = await login(app, account.email, 'phone')
    t.equal((await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204)
    t.equal((await verify(app, { token: account.tokens.accessToken })).json().code, 'token_revoked')
    t.equal((await verify(app, { token: account.tokens.refreshToken })).json().code, 'token_revoked')
    t.equal((await verify(app, { token: phone.accessToken })).statusCode, 200)
    t.equal((await verify(app, { token: phone.refreshToken })).statusCode, 200)
  })

  t.test('a disabled account', async t => {
    const account = await register(app)
    // Cached before, so the disabling must reach the cache by itself.
    t.equal((await verify(app, { token: account.tokens.accessToken })).statusCode, 200)
    await app.accounts.changeUser(null, account.id, { disabled: true })
    for (const token of [account.tokens.accessToken, account.tokens.refreshToken]) {
      const res = await verify(app, { token })
      t.equal(res.statusCode, 401)
      t.equal(res.json().code, 'account_disabled')
    }
  })

  t.test('invalid bodies', async t => {
    const account = await register(app)
    const table: Array<{ name: string, payload: unknown }> = [
      { name: 'no body fields', payload: {} },
      { name: 'token missing, another field', payload: { accessToken: account.tokens.accessToken } },
      { name: 'an extra property', payload: { token: account.tokens.accessToken, type: 'access' } },
      { name: 'an empty token', payload: { token: '' } },
      { name: 'a number', payload: { token: 12345 } },
      { name: 'a list', payload: { token: [account.tokens.accessToken] } },
      { name: 'null', payload: { token: null } },
      { name: 'too long', payload: { token: 'a'.repeat(4097) } }
    ]
    for (const { name, payload } of table) {
      const res = await verify(app, payload)
      t.equal(res.statusCode, 400, name)
      t.equal(res.json().code, 'validation_failed', name)
    }
    const none = await app.inject({ method: 'POST', url: '/auth/token/verify' })
    t.equal(none.statusCode, 400, 'no body at all')
    t.equal(none.json().code, 'validation_failed')
  })

  t.test('garbage answers 401 token_invalid', async t => {
    for (const token of ['x', 'a.b', 'a.b.c', '...', 'eyJ.eyJ.eyJ']) {
      const res = await verify(app, { token })
      t.equal(res.statusCode, 401, token)
      t.equal(res.json().code, 'token_invalid', token)
    }
  })
})
