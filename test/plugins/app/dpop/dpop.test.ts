import { randomBytes, randomUUID } from 'node:crypto'
import t from 'tap'
import { build, password, realBackends, uniqueEmail, type App, type Env, type Tokens } from '../../../helper.js'
import { dpopKey, hmacProof, proof, type DpopKey } from './proofs.js'

// app.inject speaks to http://localhost:80: the URL a proof names.
const origin = 'http://localhost'
const dpopChallenge = 'DPoP realm="latchkey", error="invalid_dpop_proof"'
const now = () => Math.floor(Date.now() / 1000)
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))

async function registerWith (app: App, key?: DpopKey, email = uniqueEmail('dpop')) {
  const headers = key ? { dpop: proof(key, { htm: 'POST', htu: `${origin}/auth/register` }) } : {}
  return await app.inject({ method: 'POST', url: '/auth/register', headers, payload: { email, password } })
}

async function loginWith (app: App, email: string, dpop?: string) {
  return await app.inject({ method: 'POST', url: '/auth/login', headers: dpop === undefined ? {} : { dpop }, payload: { email, password } })
}

async function refreshWith (app: App, refreshToken: string | undefined, dpop?: string) {
  return await app.inject({ method: 'POST', url: '/auth/refresh', headers: dpop === undefined ? {} : { dpop }, payload: { refreshToken } })
}

const loginProof = (key: DpopKey) => proof(key, { htm: 'POST', htu: `${origin}/auth/login` })
const refreshProof = (key: DpopKey) => proof(key, { htm: 'POST', htu: `${origin}/auth/refresh` })
const profileProof = (key: DpopKey, accessToken: string) => proof(key, { htu: `${origin}/profile`, accessToken })

function profile (app: App, authorization: string | undefined, dpop?: string) {
  const headers: Record<string, string> = {}
  if (authorization !== undefined) headers.authorization = authorization
  if (dpop !== undefined) headers.dpop = dpop
  return app.inject({ url: '/profile', headers })
}

/** A user bound to `key` by their login: the account's email and the bound pair. */
async function boundLogin (app: App, key: DpopKey): Promise<{ email: string, tokens: Tokens }> {
  const email = uniqueEmail('dpop')
  const registered = await registerWith(app, key, email)
  if (registered.statusCode !== 201) throw new Error(`register: ${registered.body}`)
  const res = await loginWith(app, email, loginProof(key))
  if (res.statusCode !== 200) throw new Error(`login: ${res.body}`)
  return { email, tokens: res.json().tokens }
}

t.test('the lifecycle: a login with a proof binds the session; the token works only as DPoP with a proof by that key', async t => {
  const app = await build(t)
  const key = dpopKey()
  const email = uniqueEmail('dpop')
  t.equal((await registerWith(app, undefined, email)).statusCode, 201)

  const loggedIn = await loginWith(app, email, loginProof(key))
  t.equal(loggedIn.statusCode, 200)
  const tokens: Tokens = loggedIn.json().tokens
  t.equal(tokens.tokenType, 'DPoP')
  t.same(claimsOf(tokens.accessToken).cnf, { jkt: key.jkt }, 'the access token carries cnf.jkt')
  t.same(claimsOf(tokens.refreshToken as string).cnf, { jkt: key.jkt }, 'and the refresh token')
  const sid = claimsOf(tokens.accessToken).sid
  const row = await app.db.selectFrom('sessions').select('dpop_jkt').where('id', '=', sid).executeTakeFirstOrThrow()
  t.equal(row.dpop_jkt, key.jkt, 'the session stores the thumbprint')

  const ok = await profile(app, `DPoP ${tokens.accessToken}`, profileProof(key, tokens.accessToken))
  t.equal(ok.statusCode, 200)
  t.equal(ok.json().email, email)
  const scheme = await profile(app, `dpop ${tokens.accessToken}`, profileProof(key, tokens.accessToken))
  t.equal(scheme.statusCode, 200, 'the scheme is case-insensitive')

  const asBearer = await profile(app, `Bearer ${tokens.accessToken}`, profileProof(key, tokens.accessToken))
  t.equal(asBearer.statusCode, 401)
  t.equal(asBearer.json().code, 'token_binding_mismatch', 'the bound token as Bearer, even with a proof')
  t.equal(asBearer.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')

  const noProof = await profile(app, `DPoP ${tokens.accessToken}`)
  t.equal(noProof.statusCode, 401)
  t.equal(noProof.json().code, 'dpop_proof_invalid')
  t.equal(noProof.headers['www-authenticate'], dpopChallenge)

  const verified = await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token: tokens.accessToken } })
  t.equal(verified.statusCode, 200)
  t.same(verified.json().cnf, { jkt: key.jkt }, 'verify reports cnf')
  const verifiedRefresh = await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token: tokens.refreshToken } })
  t.same(verifiedRefresh.json().cnf, { jkt: key.jkt }, 'for the refresh token too')

  const other = dpopKey()
  const byOther = await refreshWith(app, tokens.refreshToken, refreshProof(other))
  t.equal(byOther.statusCode, 400)
  t.equal(byOther.json().code, 'dpop_proof_invalid', 'a refresh with another key')
  const byNone = await refreshWith(app, tokens.refreshToken)
  t.equal(byNone.statusCode, 400)
  t.equal(byNone.json().code, 'dpop_proof_invalid', 'a refresh without a proof')

  const refreshed = await refreshWith(app, tokens.refreshToken, refreshProof(key))
  t.equal(refreshed.statusCode, 200, 'the refused refreshes neither rotated nor ended the session')
  const next: Tokens = refreshed.json().tokens
  t.equal(next.tokenType, 'DPoP')
  t.same(claimsOf(next.accessToken).cnf, { jkt: key.jkt }, 'the successor is bound to the same key')
  t.equal(claimsOf(next.accessToken).sid, sid)
  t.equal((await profile(app, `DPoP ${next.accessToken}`, profileProof(key, next.accessToken))).statusCode, 200)
  const stolen = await profile(app, `DPoP ${next.accessToken}`, profileProof(other, next.accessToken))
  t.equal(stolen.statusCode, 401, 'a thief with the token and a key of their own')
  t.equal(stolen.json().code, 'dpop_proof_invalid')

  const logout = await app.inject({
    method: 'POST',
    url: '/auth/logout',
    headers: { authorization: `DPoP ${next.accessToken}`, dpop: proof(key, { htm: 'POST', htu: `${origin}/auth/logout`, accessToken: next.accessToken }) }
  })
  t.equal(logout.statusCode, 204, 'logout takes the DPoP scheme too')
  t.equal((await profile(app, `DPoP ${next.accessToken}`, profileProof(key, next.accessToken))).json().code, 'token_revoked')
})

t.test('register with a proof binds its session; every proof algorithm of the allow-list works', async t => {
  const app = await build(t)
  for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
    const key = dpopKey(alg)
    const res = await registerWith(app, key)
    t.equal(res.statusCode, 201, alg)
    const tokens: Tokens = res.json().tokens
    t.equal(tokens.tokenType, 'DPoP')
    t.same(claimsOf(tokens.accessToken).cnf, { jkt: key.jkt })
    t.equal((await profile(app, `DPoP ${tokens.accessToken}`, profileProof(key, tokens.accessToken))).statusCode, 200, `${alg} proofs`)
  }
})

t.test('a refresh with a proof binds an unbound session (under allowed)', async t => {
  const app = await build(t)
  const res = await registerWith(app)
  const tokens: Tokens = res.json().tokens
  t.equal(tokens.tokenType, 'Bearer')
  const key = dpopKey()
  const refreshed = await refreshWith(app, tokens.refreshToken, refreshProof(key))
  t.equal(refreshed.statusCode, 200)
  const next: Tokens = refreshed.json().tokens
  t.equal(next.tokenType, 'DPoP')
  const again = await refreshWith(app, next.refreshToken)
  t.equal(again.statusCode, 400, 'from then on the session is bound')
  t.equal(again.json().code, 'dpop_proof_invalid')
  t.equal((await refreshWith(app, next.refreshToken, refreshProof(key))).statusCode, 200)
})

t.test('every way a proof can be wrong on a protected route: 401 dpop_proof_invalid with the DPoP challenge, never 500', async t => {
  const app = await build(t)
  const key = dpopKey()
  const other = dpopKey()
  const { tokens } = await boundLogin(app, key)
  const at = tokens.accessToken
  const htu = `${origin}/profile`
  const { d: _d, ...publicOnly } = key.privateKey.export({ format: 'jwk' }) as Record<string, unknown>
  const privateJwk = key.privateKey.export({ format: 'jwk' }) as Record<string, unknown>
  const cases: Array<[string, string | undefined]> = [
    ['no proof', undefined],
    ['not a JWT', 'garbage'],
    ['two proofs', `${profileProof(key, at)}, ${profileProof(key, at)}`],
    ['typ JWT', proof(key, { htu, accessToken: at, header: { typ: 'JWT' } })],
    ['no typ', proof(key, { htu, accessToken: at, header: { typ: undefined } })],
    ['alg none', proof(key, { htu, accessToken: at, header: { alg: 'none' }, signature: 'AA' })],
    ['alg HS256', hmacProof(htu, at)],
    ['alg ES384', proof(key, { htu, accessToken: at, header: { alg: 'ES384' } })],
    ['an ES256 proof naming EdDSA', proof(key, { htu, accessToken: at, header: { alg: 'EdDSA' } })],
    ['a private key in the jwk', proof(key, { htu, accessToken: at, header: { jwk: privateJwk } })],
    ['no jwk', proof(key, { htu, accessToken: at, header: { jwk: undefined } })],
    ['a jwk that is no key', proof(key, { htu, accessToken: at, header: { jwk: { ...publicOnly, x: 'AAAA' } } })],
    ['a jwk naming another alg', proof(key, { htu, accessToken: at, header: { jwk: { ...publicOnly, alg: 'ES384' } } })],
    ['crit', proof(key, { htu, accessToken: at, header: { crit: ['exp'] } })],
    ['bad signature (another key signed)', proof(key, { htu, accessToken: at, signer: other })],
    ['bad signature (garbage)', proof(key, { htu, accessToken: at, signature: randomBytes(64).toString('base64url') })],
    ['wrong htm', proof(key, { htm: 'POST', htu, accessToken: at })],
    ['htu: another path', proof(key, { htu: `${origin}/sessions`, accessToken: at })],
    ['htu: another host', proof(key, { htu: 'http://evil.example/profile', accessToken: at })],
    ['htu: https', proof(key, { htu: 'https://localhost/profile', accessToken: at })],
    ['htu: with a query', proof(key, { htu: `${htu}?page=1`, accessToken: at })],
    ['htu: with a fragment', proof(key, { htu: `${htu}#top`, accessToken: at })],
    ['htu: relative', proof(key, { htu: '/profile', accessToken: at })],
    ['htu: a number', proof(key, { htu, accessToken: at, claims: { htu: 42 } })],
    ['no jti', proof(key, { htu, accessToken: at, claims: { jti: undefined } })],
    ['jti too long', proof(key, { htu, accessToken: at, claims: { jti: 'x'.repeat(257) } })],
    ['stale iat', proof(key, { htu, accessToken: at, claims: { iat: now() - 61 - 1 } })],
    ['future iat', proof(key, { htu, accessToken: at, claims: { iat: now() + 30 } })],
    ['iat a string', proof(key, { htu, accessToken: at, claims: { iat: String(now()) } })],
    ['no iat', proof(key, { htu, accessToken: at, claims: { iat: undefined } })],
    ['no ath', proof(key, { htu })],
    ['wrong ath', proof(key, { htu, accessToken: `${at}x` })],
    ['signed by another key than the bound one', proof(other, { htu, accessToken: at })]
  ]
  for (const [name, dpop] of cases) {
    const res = await profile(app, `DPoP ${at}`, dpop)
    t.equal(res.statusCode, 401, name)
    t.equal(res.json().code, 'dpop_proof_invalid', `${name}: code`)
    t.equal(res.headers['www-authenticate'], dpopChallenge, `${name}: header`)
  }

  const once = profileProof(key, at)
  t.equal((await profile(app, `DPoP ${at}`, once)).statusCode, 200, 'a good proof, once')
  const replayed = await profile(app, `DPoP ${at}`, once)
  t.equal(replayed.statusCode, 401, 'a replayed jti')
  t.equal(replayed.json().code, 'dpop_proof_invalid')
  t.equal(replayed.headers['www-authenticate'], dpopChallenge)
  t.equal((await profile(app, `DPoP ${at}`, profileProof(key, at))).statusCode, 200, 'the refusals cost the client nothing: a fresh proof works')

  const broken = await profile(app, `DPoP ${at.slice(0, -4)}AAAA`, profileProof(key, `${at.slice(0, -4)}AAAA`))
  t.equal(broken.statusCode, 401, 'a bad token with the DPoP scheme')
  t.equal(broken.json().code, 'token_invalid')
  t.equal(broken.headers['www-authenticate'], 'DPoP realm="latchkey", error="invalid_token"')
})

t.test('a proof at login or refresh is checked as strictly: 400 dpop_proof_invalid, no session opened, no fallback to Bearer', async t => {
  const app = await build(t)
  const key = dpopKey()
  const { email, tokens } = await boundLogin(app, key)
  const user = await app.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow()
  const count = async () => (await app.db.selectFrom('sessions').select('id').where('user_id', '=', user.id).execute()).length
  const before = await count()
  const loginCases: Array<[string, string]> = [
    ['typ JWT', proof(key, { htm: 'POST', htu: `${origin}/auth/login`, header: { typ: 'JWT' } })],
    ['bad signature', proof(key, { htm: 'POST', htu: `${origin}/auth/login`, signer: dpopKey() })],
    ['wrong htm', proof(key, { htu: `${origin}/auth/login` })],
    ['htu of another route', proof(key, { htm: 'POST', htu: `${origin}/auth/register` })],
    ['stale iat', proof(key, { htm: 'POST', htu: `${origin}/auth/login`, claims: { iat: now() - 120 } })],
    ['not a JWT', 'e30.e30.e30']
  ]
  for (const [name, dpop] of loginCases) {
    const res = await loginWith(app, email, dpop)
    t.equal(res.statusCode, 400, `login, ${name}`)
    t.equal(res.json().code, 'dpop_proof_invalid', `login, ${name}: code`)
  }
  const used = loginProof(key)
  t.equal((await loginWith(app, email, used)).statusCode, 200)
  t.equal((await loginWith(app, email, used)).json().code, 'dpop_proof_invalid', 'login, replayed')
  t.equal(await count(), before + 1, 'only the good proof opened a session')

  const badRefresh = await refreshWith(app, tokens.refreshToken, proof(key, { htm: 'POST', htu: `${origin}/auth/refresh?x=1` }))
  t.equal(badRefresh.statusCode, 400)
  t.equal(badRefresh.json().code, 'dpop_proof_invalid', 'refresh, htu with a query')
  t.equal(badRefresh.headers['www-authenticate'], undefined, 'a 400 carries no challenge')
})

t.test('htu is the URL as TRUST_PROXY resolves scheme and host', async t => {
  const app = await build(t, { TRUST_PROXY: 'true' })
  const key = dpopKey()
  const proxied = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'auth.example.com' }
  const email = uniqueEmail('dpop')
  const res = await app.inject({
    method: 'POST',
    url: '/auth/register',
    headers: { ...proxied, dpop: proof(key, { htm: 'POST', htu: 'https://auth.example.com/auth/register' }) },
    payload: { email, password }
  })
  t.equal(res.statusCode, 201)
  const at: string = res.json().tokens.accessToken
  const asSeen = await app.inject({ url: '/profile?fields=all', headers: { ...proxied, authorization: `DPoP ${at}`, dpop: proof(key, { htu: 'https://AUTH.example.com:443/profile', accessToken: at }) } })
  t.equal(asSeen.statusCode, 200, 'the public URL, normalised, without the query the request has')
  const internal = await app.inject({ url: '/profile', headers: { ...proxied, authorization: `DPoP ${at}`, dpop: proof(key, { htu: `${origin}/profile`, accessToken: at }) } })
  t.equal(internal.statusCode, 401, 'not the address behind the proxy')
  t.equal(internal.json().code, 'dpop_proof_invalid')
})

t.test('with encrypted tokens, ath is the hash of the JWE that was sent', async t => {
  const app = await build(t, { TOKEN_ENCRYPTION_KEY: randomBytes(32).toString('base64url') })
  const key = dpopKey()
  const res = await registerWith(app, key)
  const at: string = res.json().tokens.accessToken
  t.equal(at.split('.').length, 5, 'a JWE')
  t.equal((await profile(app, `DPoP ${at}`, profileProof(key, at))).statusCode, 200)
})

t.test('DPOP=off ignores proofs: Bearer tokens as before, the DPoP scheme refused', async t => {
  const app = await build(t, { DPOP: 'off' })
  const key = dpopKey()
  const res = await registerWith(app, key)
  t.equal(res.statusCode, 201)
  const tokens: Tokens = res.json().tokens
  t.equal(tokens.tokenType, 'Bearer')
  t.equal(claimsOf(tokens.accessToken).cnf, undefined, 'no cnf')
  t.equal((await loginWith(app, res.json().user.email, 'not even a proof')).statusCode, 200, 'a broken proof is ignored too')
  t.equal((await profile(app, `Bearer ${tokens.accessToken}`)).statusCode, 200)
  const dpop = await profile(app, `DPoP ${tokens.accessToken}`, profileProof(key, tokens.accessToken))
  t.equal(dpop.statusCode, 401)
  t.equal(dpop.json().code, 'token_invalid')
  t.equal(dpop.headers['www-authenticate'], 'DPoP realm="latchkey", error="invalid_token"')
  t.equal((await refreshWith(app, tokens.refreshToken, refreshProof(key))).json().tokens.tokenType, 'Bearer')
})

t.test('DPOP=required refuses register, login and refresh without a proof', async t => {
  const app = await build(t, { DPOP: 'required' })
  const email = uniqueEmail('dpop')
  const refused = await registerWith(app, undefined, email)
  t.equal(refused.statusCode, 400)
  t.equal(refused.json().code, 'dpop_proof_invalid')
  t.equal(await app.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst(), undefined, 'no account was created')

  const key = dpopKey()
  t.equal((await registerWith(app, key, email)).statusCode, 201)
  const noProof = await loginWith(app, email)
  t.equal(noProof.statusCode, 400, 'login without a proof')
  t.equal(noProof.json().code, 'dpop_proof_invalid')
  const loggedIn = await loginWith(app, email, loginProof(key))
  t.equal(loggedIn.statusCode, 200)
  const tokens: Tokens = loggedIn.json().tokens
  t.equal(tokens.tokenType, 'DPoP')
  t.equal((await refreshWith(app, tokens.refreshToken)).json().code, 'dpop_proof_invalid', 'refresh without a proof')
  t.equal((await refreshWith(app, tokens.refreshToken, refreshProof(key))).statusCode, 200)
})

t.test('under allowed an unbound session is untouched: no proof, Bearer tokens', async t => {
  const app = await build(t)
  const res = await registerWith(app)
  const tokens: Tokens = res.json().tokens
  t.equal(tokens.tokenType, 'Bearer')
  t.equal((await profile(app, `Bearer ${tokens.accessToken}`)).statusCode, 200)
  const asDpop = await profile(app, `DPoP ${tokens.accessToken}`, profileProof(dpopKey(), tokens.accessToken))
  t.equal(asDpop.statusCode, 401, 'an unbound token is no DPoP token')
  t.equal(asDpop.json().code, 'token_invalid')
})

const skipShared = realBackends && process.env.REDIS_URL ? false : 'needs DATABASE_URL and REDIS_URL'

t.test('a proof replayed on a second instance sharing Redis is refused', { skip: skipShared }, async t => {
  // Redis healthy throughout: a command that outlasts the 500 ms default on a
  // loaded machine would distrust Redis, and the claim would then be local only.
  const shared: Env = { CACHE_PREFIX: `latchkey-test-${randomUUID()}:`, REDIS_COMMAND_TIMEOUT_MS: '10000' }
  const a = await build(t, shared)
  const b = await build(t, shared)
  const key = dpopKey()
  const { tokens } = await boundLogin(a, key)
  const at = tokens.accessToken
  const once = profileProof(key, at)
  t.equal((await profile(a, `DPoP ${at}`, once)).statusCode, 200, 'used on a')
  const replayed = await profile(b, `DPoP ${at}`, once)
  t.equal(replayed.statusCode, 401, 'replayed on b')
  t.equal(replayed.json().code, 'dpop_proof_invalid')
  t.equal(replayed.headers['www-authenticate'], dpopChallenge)
  t.equal((await profile(b, `DPoP ${at}`, profileProof(key, at))).statusCode, 200, 'a fresh proof works on b')

  const refreshOnce = refreshProof(key)
  const refreshed = await refreshWith(b, tokens.refreshToken, refreshOnce)
  t.equal(refreshed.statusCode, 200, 'a refresh proof used on b')
  const again = await refreshWith(a, refreshed.json().tokens.refreshToken, refreshOnce)
  t.equal(again.statusCode, 400, 'replayed on a with the successor')
  t.equal(again.json().code, 'dpop_proof_invalid')
})
