import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { build, password, uniqueEmail, type Tokens } from '../../../helper.js'
import { canonicalIp } from '../../../../plugins/app/sessions/binding.js'

interface Call {
  method?: 'GET' | 'POST'
  path: string
  /** The loopback address the request is sent from. */
  from: string
  /** The User-Agent header; null sends none. */
  userAgent: string | null
  token?: string
  body?: object
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, json: any }

/** A real HTTP request to the app from the given local address. */
function call (port: number, options: Call): Promise<Reply> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body)
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      localAddress: options.from,
      method: options.method ?? (body === undefined ? 'GET' : 'POST'),
      path: options.path,
      agent: false,
      headers: {
        ...(options.userAgent !== null && { 'user-agent': options.userAgent }),
        ...(options.token !== undefined && { authorization: `Bearer ${options.token}` }),
        ...(body !== undefined && { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      }
    }, res => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { data += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, json: data === '' ? undefined : JSON.parse(data) }))
    })
    req.once('error', reject)
    req.end(body)
  })
}

const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))
const phone = 'Mozilla/5.0 (Linux; Android 14) Firefox/128.0'
const laptop = 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0'

async function serve (t: Test, binding: string) {
  const app = await build(t, { TOKEN_BINDING: binding })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const client = (from: string, userAgent: string | null) => ({
    profile: (tokens: Tokens) => call(port, { path: '/profile', from, userAgent, token: tokens.accessToken }),
    refresh: (tokens: Tokens) => call(port, { path: '/auth/refresh', from, userAgent, body: { refreshToken: tokens.refreshToken } }),
    logout: (body: object, token?: string) => call(port, { path: '/auth/logout', from, userAgent, token, body }),
    verify: (token: string) => call(port, { path: '/auth/token/verify', from, userAgent, body: { token } })
  })
  /** A new account registered from `from` with `userAgent`; its tokens. */
  const registered = async (from: string, userAgent: string): Promise<Tokens> => {
    const res = await call(port, { path: '/auth/register', from, userAgent, body: { email: uniqueEmail(), password } })
    if (res.status !== 201) throw new Error(`register: ${res.status} ${JSON.stringify(res.json)}`)
    return res.json.tokens
  }
  return { app, client, registered }
}

function mismatch (t: Test, res: Reply, status: number, what: string) {
  t.equal(res.status, status, what)
  t.equal(res.json?.code, 'token_binding_mismatch', what)
}

t.test('TOKEN_BINDING=device+ip', async t => {
  const { app, client, registered } = await serve(t, 'device+ip')
  const here = client('127.0.0.2', phone)

  t.test('both tokens carry a bnd claim that reveals neither the User-Agent nor the address', async t => {
    const tokens = await registered('127.0.0.2', phone)
    const access = claims(tokens.accessToken)
    const refresh = claims(tokens.refreshToken as string)
    t.match(access.bnd, /^[A-Za-z0-9_-]{43}$/)
    t.match(refresh.bnd, /^[A-Za-z0-9_-]{43}$/)
    t.not(access.bnd, refresh.bnd, 'the access token binds the address too, the refresh token only the device')
    for (const token of [tokens.accessToken, tokens.refreshToken as string]) {
      const payload = Buffer.from(token.split('.')[1], 'base64url').toString('utf8')
      t.notOk(payload.includes('Android') || payload.includes('Firefox') || payload.includes('127.0.0.2'), 'no raw value in the token')
    }
    t.equal((await here.profile(tokens)).status, 200, 'accepted from where it was issued')
  })

  t.test('another User-Agent, none, or another address: 401 token_binding_mismatch', async t => {
    const tokens = await registered('127.0.0.2', phone)
    const other = await client('127.0.0.2', laptop).profile(tokens)
    mismatch(t, other, 401, 'another User-Agent')
    t.equal(other.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    mismatch(t, await client('127.0.0.2', null).profile(tokens), 401, 'no User-Agent')
    mismatch(t, await client('127.0.0.3', phone).profile(tokens), 401, 'another address')
    t.equal((await here.profile(tokens)).status, 200, 'still fine from where it was issued')
    // SPEC §8: each mismatch is an audit event, naming where the token was presented from.
    const events = await app.db.selectFrom('audit_events').selectAll()
      .where('session_id', '=', claims(tokens.accessToken).sid as string).where('type', '=', 'session.binding_mismatch').orderBy('id').execute()
    t.same(events.map(e => [e.ip, e.user_agent, e.detail]), [
      ['127.0.0.2', laptop, { token: 'access', binding: 'device+ip' }],
      ['127.0.0.2', null, { token: 'access', binding: 'device+ip' }],
      ['127.0.0.3', phone, { token: 'access', binding: 'device+ip' }]
    ], 'one event per mismatch')
  })

  t.test('verify reports the binding without enforcing it', async t => {
    const tokens = await registered('127.0.0.2', phone)
    const elsewhere = client('127.0.0.4', laptop)
    for (const token of [tokens.accessToken, tokens.refreshToken as string]) {
      const res = await elsewhere.verify(token)
      t.equal(res.status, 200)
      t.equal(res.json.bound, true)
    }
  })

  t.test('logout from elsewhere is refused, by access token and by refresh token', async t => {
    const tokens = await registered('127.0.0.2', phone)
    mismatch(t, await client('127.0.0.3', phone).logout({}, tokens.accessToken), 401, 'by access token from another address')
    mismatch(t, await client('127.0.0.2', laptop).logout({ refreshToken: tokens.refreshToken }), 401, 'by refresh token from another device')
    t.equal((await here.profile(tokens)).status, 200, 'the session was not ended')
    t.equal((await here.logout({ scope: 'local' }, tokens.accessToken)).status, 204, 'the device itself logs out')
  })

  t.test('a refresh from another address with the same User-Agent binds the new access token there', async t => {
    const tokens = await registered('127.0.0.2', phone)
    const moved = client('127.0.0.3', phone)
    const res = await moved.refresh(tokens)
    t.equal(res.status, 200)
    const next: Tokens = res.json.tokens
    t.not(claims(next.accessToken).bnd, claims(tokens.accessToken).bnd)
    t.equal(claims(next.refreshToken as string).bnd, claims(tokens.refreshToken as string).bnd, 'the refresh token stays bound to the device')
    t.equal((await moved.profile(next)).status, 200, 'the new access token works from the new address')
    mismatch(t, await here.profile(next), 401, 'and not from the old one')
    t.equal((await here.refresh(next)).status, 200, 'the refresh token works from either address')
  })

  t.test('a refresh with another User-Agent never yields a token', async t => {
    const tokens = await registered('127.0.0.2', phone)
    for (const userAgent of [laptop, null]) {
      const res = await client('127.0.0.2', userAgent).refresh(tokens)
      mismatch(t, res, 400, `refresh with ${userAgent ?? 'no User-Agent'}`)
      t.notOk(res.json.tokens)
    }
    const res = await here.refresh(tokens)
    t.equal(res.status, 200, 'the refresh token was not used up by the refused tries')
  })
})

t.test('TOKEN_BINDING=ip', async t => {
  const { client, registered } = await serve(t, 'ip')
  const tokens = await registered('127.0.0.2', phone)
  t.ok(claims(tokens.accessToken).bnd, 'the access token is bound')
  t.equal(claims(tokens.refreshToken as string).bnd, undefined, 'the refresh token is not: it binds to the device only, and the device is not bound')
  t.equal((await client('127.0.0.2', laptop).profile(tokens)).status, 200, 'another User-Agent from the same address is fine')
  mismatch(t, await client('127.0.0.3', phone).profile(tokens), 401, 'another address is not')
  const res = await client('127.0.0.3', laptop).refresh(tokens)
  t.equal(res.status, 200, 'a refresh from anywhere works')
  t.equal((await client('127.0.0.3', phone).profile(res.json.tokens)).status, 200, 'and binds the new access token to its address')
  mismatch(t, await client('127.0.0.2', phone).profile(res.json.tokens), 401, 'not to the old one')
})

t.test('TOKEN_BINDING=device', async t => {
  const { client, registered } = await serve(t, 'device')
  const tokens = await registered('127.0.0.2', phone)
  t.equal(claims(tokens.accessToken).bnd, claims(tokens.refreshToken as string).bnd, 'both tokens bind the device alone')
  t.equal((await client('127.0.0.3', phone).profile(tokens)).status, 200, 'another address is fine')
  mismatch(t, await client('127.0.0.2', laptop).profile(tokens), 401, 'another User-Agent is not')
  mismatch(t, await client('127.0.0.2', laptop).refresh(tokens), 400, 'nor for refresh')
  t.equal((await client('127.0.0.3', phone).refresh(tokens)).status, 200)
})

t.test('TOKEN_BINDING=none (the default): no claim, any client', async t => {
  const { client, registered } = await serve(t, 'none')
  const tokens = await registered('127.0.0.2', phone)
  t.equal(claims(tokens.accessToken).bnd, undefined)
  t.equal((await client('127.0.0.3', laptop).profile(tokens)).status, 200)
  t.equal((await client('127.0.0.3', laptop).verify(tokens.accessToken)).json.bound, false)
})

t.test('a token issued before binding was turned on is refused once it is', async t => {
  const { registered } = await serve(t, 'none')
  const tokens = await registered('127.0.0.2', phone)
  const { client } = await serve(t, 'device+ip')
  mismatch(t, await client('127.0.0.2', phone).profile(tokens), 401, 'an unbound access token')
  mismatch(t, await client('127.0.0.2', phone).refresh(tokens), 400, 'an unbound refresh token')
})

t.test('addresses are compared in canonical form', async t => {
  t.test('canonicalIp', async t => {
    for (const [given, canonical] of [
      ['127.0.0.1', '127.0.0.1'],
      ['::ffff:127.0.0.1', '127.0.0.1'],
      ['::FFFF:7f00:2', '127.0.0.2'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['fe80::1%eth0', 'fe80::1%eth0'],
      ['not an address', 'not an address']
    ]) t.equal(canonicalIp(given), canonical, given)
  })

  const app = await build(t, { TOKEN_BINDING: 'ip' })
  const loginFrom = async (remoteAddress: string) => {
    const email = uniqueEmail()
    const res = await app.inject({ method: 'POST', url: '/auth/register', remoteAddress, payload: { email, password } })
    return res.json().tokens as Tokens
  }
  const profileFrom = (tokens: Tokens, remoteAddress: string) =>
    app.inject({ url: '/profile', remoteAddress, headers: { authorization: `Bearer ${tokens.accessToken}` } })

  const v4 = await loginFrom('::ffff:127.0.0.2')
  t.equal((await profileFrom(v4, '127.0.0.2')).statusCode, 200, 'an IPv4-mapped address is the IPv4 address')
  t.equal((await profileFrom(v4, '127.0.0.3')).statusCode, 401)
  const sessions = await app.inject({ url: '/sessions', remoteAddress: '127.0.0.2', headers: { authorization: `Bearer ${v4.accessToken}` } })
  t.equal(sessions.json().sessions[0].ip, '127.0.0.2', 'the session list shows the canonical address')
  const v6 = await loginFrom('2001:DB8:0:0:0:0:0:1')
  t.equal((await profileFrom(v6, '2001:db8::1')).statusCode, 200, 'one IPv6 address however written')
  t.equal((await profileFrom(v6, '2001:db8::2')).statusCode, 401)
})

t.test('behind a trusted proxy, the address is the forwarded one', async t => {
  const app = await build(t, { TOKEN_BINDING: 'ip', TRUST_PROXY: 'true' })
  const res = await app.inject({ method: 'POST', url: '/auth/register', headers: { 'x-forwarded-for': '203.0.113.7' }, payload: { email: uniqueEmail(), password } })
  const tokens: Tokens = res.json().tokens
  const from = (forwardedFor: string) => app.inject({ url: '/profile', headers: { authorization: `Bearer ${tokens.accessToken}`, 'x-forwarded-for': forwardedFor } })
  t.equal((await from('203.0.113.7')).statusCode, 200)
  t.equal((await from('198.51.100.1')).statusCode, 401)
})
