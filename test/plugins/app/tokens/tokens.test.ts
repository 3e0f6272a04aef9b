import { createHmac, createPublicKey, generateKeyPairSync, randomUUID, sign as cryptoSign, type KeyObject } from 'node:crypto'
import t from 'tap'
import { authed, build, refresh, register, testEnv, type App } from '../../../helper.js'

// Forged tokens are built here, with node:crypto, never with the code under test.
const secret = testEnv().JWT_SECRET as string
type Json = Record<string, unknown>
type Kind = 'access' | 'refresh'

const b64 = (value: Json | string) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const hmac = (input: string, algorithm = 'sha256', key = secret) => createHmac(algorithm, key).update(input).digest('base64url')

type Sign = (input: string) => string
const hs256: Sign = input => hmac(input)
const es256 = (key: KeyObject): Sign => input => cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')

function forge (header: Json, payload: Json | string, sign: Sign = hs256): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${sign(input)}`
}

// The ES256 instance's key, and a stranger's: another service's key pair, with its own kid.
const esKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const strangerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const esPem = esKey.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
const esPublicPem = createPublicKey(esKey.privateKey).export({ format: 'pem', type: 'spki' }) as string

const part = (token: string, index: number): Json => JSON.parse(Buffer.from(token.split('.')[index], 'base64url').toString('utf8'))
const without = (object: Json, key: string) => Object.fromEntries(Object.entries(object).filter(([k]) => k !== key))
const now = () => Math.floor(Date.now() / 1000)

/** What a real token of the kind looks like: its header and claims, ready to be changed and re-signed. */
interface Base { kind: Kind, header: Json, claims: Json, token: string, otherUserId: string, sign: Sign }

interface Suite { alg: 'HS256' | 'ES256', env: Record<string, string>, sign: Sign }
const suites: Suite[] = [
  { alg: 'HS256', env: {}, sign: hs256 },
  { alg: 'ES256', env: { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: esPem }, sign: es256(esKey.privateKey) }
]

interface Case {
  name: string
  /** The one algorithm the forgery is about (every suite by default). */
  only?: Suite['alg']
  /** Which kinds of token the forgery applies to (both by default). */
  kinds?: Kind[]
  code?: 'token_invalid' | 'token_expired'
  forge (base: Base): string
}

const resign = (change: (claims: Json) => Json, header?: (header: Json) => Json) =>
  (base: Base) => forge(header ? header(base.header) : base.header, change({ ...base.claims }), base.sign)

const cases: Case[] = [
  ...['none', 'None', 'NONE', 'nOnE'].map((alg): Case => ({
    name: `alg "${alg}" with an empty signature`,
    forge: base => `${b64({ ...base.header, alg })}.${b64(base.claims)}.`
  })),
  {
    name: 'alg "none" with the real signature',
    forge: base => { const input = `${b64({ ...base.header, alg: 'none' })}.${b64(base.claims)}`; return `${input}.${base.sign(input)}` }
  },
  { name: 'the real header with an empty signature', forge: base => `${b64(base.header)}.${b64(base.claims)}.` },
  {
    name: 'payload tampered (role: admin), original signature',
    kinds: ['access'],
    forge: base => { const [h, , s] = base.token.split('.'); return `${h}.${b64({ ...base.claims, role: 'admin' })}.${s}` }
  },
  {
    name: 'payload tampered (sub of another user), original signature',
    forge: base => { const [h, , s] = base.token.split('.'); return `${h}.${b64({ ...base.claims, sub: base.otherUserId })}.${s}` }
  },
  {
    name: 'payload tampered (exp pushed back), original signature',
    forge: base => { const [h, , s] = base.token.split('.'); return `${h}.${b64({ ...base.claims, exp: (base.claims.exp as number) + 3600 })}.${s}` }
  },
  ...[['HS384', 'sha384'], ['HS512', 'sha512']].map(([alg, algorithm]): Case => ({
    name: `re-signed with ${alg} and the real secret`,
    only: 'HS256',
    forge: base => forge({ ...base.header, alg }, base.claims, input => hmac(input, algorithm))
  })),
  {
    name: 'signed with another secret',
    only: 'HS256',
    forge: base => forge(base.header, base.claims, input => hmac(input, 'sha256', 'another-secret-another-secret-another-0123'))
  },
  {
    name: 'expired and signed with another secret: the signature is what is wrong',
    only: 'HS256',
    forge: base => forge(base.header, { ...base.claims, iat: now() - 600, exp: now() - 60 }, input => hmac(input, 'sha256', 'another-secret-another-secret-another-0123'))
  },
  {
    name: 'signed with the secret as an empty key',
    only: 'HS256',
    forge: base => forge(base.header, base.claims, input => hmac(input, 'sha256', ''))
  },
  ...[['the PEM text', esPublicPem], ['the DER bytes', createPublicKey(esPem).export({ format: 'der', type: 'spki' })]].map(([what, key]): Case => ({
    name: `HS256 signed with the public key's ${what as string} as the secret (key confusion)`,
    only: 'ES256',
    forge: base => forge({ ...base.header, alg: 'HS256' }, base.claims, input => createHmac('sha256', key).update(input).digest('base64url'))
  })),
  ...['RS256', 'ES384', 'ES512', 'EdDSA', 'PS256'].map((alg): Case => ({
    name: `header alg ${alg} (a sibling) over the real ES256 signature`,
    only: 'ES256',
    forge: base => forge({ ...base.header, alg }, base.claims, base.sign)
  })),
  {
    name: 'signed with another P-256 key under the real kid',
    only: 'ES256',
    forge: base => forge(base.header, base.claims, es256(strangerKey.privateKey))
  },
  {
    name: 'expired and signed with another P-256 key: the signature is what is wrong',
    only: 'ES256',
    forge: base => forge(base.header, { ...base.claims, iat: now() - 600, exp: now() - 60 }, es256(strangerKey.privateKey))
  },
  {
    name: 'a key from another JWKS: signed by a stranger with its own kid',
    only: 'ES256',
    forge: base => forge({ ...base.header, kid: 'stranger-key' }, base.claims, es256(strangerKey.privateKey))
  },
  { name: 'an unknown kid, really signed', forge: resign(claims => claims, header => ({ ...header, kid: 'no-such-key' })) },
  { name: 'no kid, really signed', forge: resign(claims => claims, header => without(header, 'kid')) },
  { name: 'kid as a number, really signed', forge: resign(claims => claims, header => ({ ...header, kid: 7 })) },
  ...['jku', 'x5u'].map((name): Case => ({
    name: `a ${name} header, really signed: never fetched`,
    forge: resign(claims => claims, header => ({ ...header, [name]: 'http://127.0.0.1:9/keys.json' }))
  })),
  {
    name: 'an embedded jwk header with the stranger\'s key, signed by it',
    only: 'ES256',
    forge: base => forge({ ...base.header, jwk: strangerKey.publicKey.export({ format: 'jwk' }) }, base.claims, es256(strangerKey.privateKey))
  },
  {
    name: 'an embedded jwk header with the real key, really signed',
    only: 'ES256',
    forge: resign(claims => claims, header => ({ ...header, jwk: esKey.publicKey.export({ format: 'jwk' }) }))
  },
  { name: 'an x5c header, really signed', forge: resign(claims => claims, header => ({ ...header, x5c: ['MIIB'] })) },
  ...['iss', 'aud', 'sub', 'sid', 'jti', 'iat', 'exp', 'ver', 'typ'].map((claim): Case => ({
    name: `claim ${claim} missing`,
    forge: resign(claims => without(claims, claim))
  })),
  { name: 'wrong iss', forge: resign(claims => ({ ...claims, iss: 'someone-else' })) },
  { name: 'wrong aud', forge: resign(claims => ({ ...claims, aud: 'another-service' })) },
  { name: 'aud as a list without ours', forge: resign(claims => ({ ...claims, aud: ['another-service'] })) },
  { name: 'wrong typ claim (id)', forge: resign(claims => ({ ...claims, typ: 'id' })) },
  { name: 'header typ missing', kinds: ['access'], forge: resign(claims => claims, header => without(header, 'typ')) },
  { name: 'header typ "JWT"', kinds: ['access'], forge: resign(claims => claims, header => ({ ...header, typ: 'JWT' })) },
  { name: 'expired', code: 'token_expired', forge: resign(claims => ({ ...claims, iat: now() - 600, exp: now() - 60 })) },
  { name: 'nbf in the future', forge: resign(claims => ({ ...claims, nbf: now() + 600 })) },
  { name: 'iat in the future', forge: resign(claims => ({ ...claims, iat: now() + 600, exp: now() + 900 })) },
  {
    name: 'unknown crit header',
    forge: resign(claims => claims, header => ({ ...header, crit: ['x-unknown'], 'x-unknown': true }))
  },
  { name: 'crit an empty list', forge: resign(claims => claims, header => ({ ...header, crit: [] })) },
  { name: 'crit not a list', forge: resign(claims => claims, header => ({ ...header, crit: 'x-unknown', 'x-unknown': true })) },
  { name: 'crit naming a standard header', forge: resign(claims => claims, header => ({ ...header, crit: ['alg'] })) },
  { name: 'crit b64 (unencoded payload, unsupported)', forge: resign(claims => claims, header => ({ ...header, crit: ['b64'], b64: false })) },
  { name: 'alg missing from the header', forge: resign(claims => claims, header => without(header, 'alg')) },
  { name: 'alg in lower case', forge: resign(claims => claims, header => ({ ...header, alg: String(header.alg).toLowerCase() })) },
  { name: 'sub as a number', forge: resign(claims => ({ ...claims, sub: 12345 })) },
  { name: 'ver as a string', forge: resign(claims => ({ ...claims, ver: String(claims.ver) })) },
  { name: 'exp as a string', forge: resign(claims => ({ ...claims, exp: String(claims.exp) })) },
  { name: 'iat as a string', forge: resign(claims => ({ ...claims, iat: String(claims.iat) })) },
  { name: 'aud as an object', forge: resign(claims => ({ ...claims, aud: { latchkey: true } })) },
  { name: 'jti as a number', forge: resign(claims => ({ ...claims, jti: 42 })) },
  { name: 'nbf as a string', forge: resign(claims => ({ ...claims, nbf: String(now() - 60) })) },
  { name: 'iat not a whole number', forge: resign(claims => ({ ...claims, iat: (claims.iat as number) + 0.5 })) },
  { name: 'role unknown', kinds: ['access'], forge: resign(claims => ({ ...claims, role: 'root' })) },
  { name: 'email_verified as a string', kinds: ['access'], forge: resign(claims => ({ ...claims, email_verified: 'true' })) },
  { name: 'two segments', forge: base => base.token.split('.').slice(0, 2).join('.') },
  { name: 'four segments', forge: base => `${base.token}.${base.token.split('.')[2]}` },
  { name: 'garbage base64', forge: () => '!!!.@@@.###' },
  { name: 'header not JSON', forge: base => { const input = `${b64('{"alg":')}.${b64(base.claims)}`; return `${input}.${base.sign(input)}` } },
  { name: 'payload not JSON', forge: base => forge(base.header, 'not json at all', base.sign) },
  { name: 'payload a JSON array', forge: base => forge(base.header, JSON.stringify([base.claims]), base.sign) },
  { name: 'payload a JSON string', forge: base => forge(base.header, JSON.stringify('latchkey'), base.sign) },
  { name: 'header a JSON array', forge: base => { const input = `${b64('["HS256"]')}.${b64(base.claims)}`; return `${input}.${base.sign(input)}` } },
  { name: 'a 3000-character junk string', forge: () => 'x'.repeat(1000) + '.' + 'y'.repeat(999) + '.' + 'z'.repeat(999) },
  {
    name: 'a refresh token where an access token is expected (typ claim "refresh")',
    kinds: ['access'],
    forge: resign(claims => ({ ...claims, typ: 'refresh' }))
  },
  {
    name: 'an access token where a refresh token is expected (typ claim "access", at+jwt header)',
    kinds: ['refresh'],
    forge: resign(claims => ({ ...claims, typ: 'access' }), header => ({ ...header, typ: 'at+jwt' }))
  }
]

const profile = (app: App, token: string) => authed(app, token, { url: '/profile' })
const verify = (app: App, token: string) => app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token } })

for (const suite of suites) {
  t.test(`forged tokens are refused with a code, never a 500 (${suite.alg})`, async t => {
    const app = await build(t, suite.env)
    const account = await register(app)
    const other = await register(app)
    const refreshToken = account.tokens.refreshToken as string
    const bases: Record<Kind, Base> = {
      access: { kind: 'access', header: part(account.tokens.accessToken, 0), claims: { ...part(account.tokens.accessToken, 1), jti: randomUUID() }, token: account.tokens.accessToken, otherUserId: other.id, sign: suite.sign },
      // A refresh token is only good with its recorded jti: the forgeries keep it, so only the forged part is at fault.
      refresh: { kind: 'refresh', header: part(refreshToken, 0), claims: part(refreshToken, 1), token: refreshToken, otherUserId: other.id, sign: suite.sign }
    }
    t.same(bases.access.header, { alg: suite.alg, typ: 'at+jwt', kid: bases.access.header.kid }, 'access tokens carry the RFC 9068 header')
    t.type(bases.access.header.kid, 'string', 'and a kid')

    for (const c of cases.filter(c => c.only === undefined || c.only === suite.alg)) {
      t.test(c.name, async t => {
        const expected = c.code ?? 'token_invalid'
        const kinds = c.kinds ?? ['access', 'refresh']
        if (kinds.includes('access')) {
          const token = c.forge(bases.access)
          const res = await profile(app, token)
          t.equal(res.statusCode, 401, 'GET /profile: 401')
          t.equal(res.json().code, expected, `GET /profile: ${expected}`)
          t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
          const checked = await verify(app, token)
          t.equal(checked.statusCode, 401, 'POST /auth/token/verify (access): 401')
          t.equal(checked.json().code, expected, `POST /auth/token/verify (access): ${expected}`)
        }
        if (kinds.includes('refresh')) {
          const token = c.forge(bases.refresh)
          const res = await refresh(app, token)
          t.equal(res.statusCode, 400, 'POST /auth/refresh: 400')
          t.equal(res.json().code, expected, `POST /auth/refresh: ${expected}`)
          const checked = await verify(app, token)
          t.equal(checked.statusCode, 401, 'POST /auth/token/verify (refresh): 401')
          t.equal(checked.json().code, expected, `POST /auth/token/verify (refresh): ${expected}`)
        }
      })
    }

    t.test('a real refresh token is not an access token, nor the reverse', async t => {
      const asAccess = await profile(app, refreshToken)
      t.equal(asAccess.statusCode, 401)
      t.equal(asAccess.json().code, 'token_invalid')
      t.equal(asAccess.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
      const asRefresh = await refresh(app, account.tokens.accessToken)
      t.equal(asRefresh.statusCode, 400)
      t.equal(asRefresh.json().code, 'token_invalid')
    })

    t.test('after every forgery the real tokens still work: nothing was consumed or revoked', async t => {
      t.equal((await profile(app, account.tokens.accessToken)).statusCode, 200)
      const res = await refresh(app, refreshToken)
      t.equal(res.statusCode, 200, 'the real refresh token rotates')
    })
  })
}

t.test('a token forged correctly with the real secret is accepted (so the refusals mean something)', async t => {
  const app = await build(t)
  const account = await register(app)
  const access = part(account.tokens.accessToken, 1)
  const refreshClaims = part(account.tokens.refreshToken as string, 1)

  const forgedAccess = forge(part(account.tokens.accessToken, 0), { ...access, jti: randomUUID() })
  t.not(forgedAccess, account.tokens.accessToken)
  const res = await profile(app, forgedAccess)
  t.equal(res.statusCode, 200, 'GET /profile accepts it')
  t.equal(res.json().id, account.id)
  const checked = await verify(app, forgedAccess)
  t.equal(checked.statusCode, 200)
  t.match(checked.json(), { valid: true, type: 'access', sub: account.id, sid: access.sid, exp: access.exp })

  const forgedRefresh = forge(part(account.tokens.refreshToken as string, 0), refreshClaims)
  const refreshChecked = await verify(app, forgedRefresh)
  t.equal(refreshChecked.statusCode, 200)
  t.match(refreshChecked.json(), { valid: true, type: 'refresh', sub: account.id, sid: refreshClaims.sid })
  const rotated = await refresh(app, forgedRefresh)
  t.equal(rotated.statusCode, 200, 'POST /auth/refresh accepts it')
  t.equal((await profile(app, rotated.json().tokens.accessToken)).statusCode, 200)
})

t.test('only the configured algorithm is accepted, never a sibling', async t => {
  // RFC 7518 §3.2: an HS512 secret is at least 64 characters.
  const long = secret + secret
  const app = await build(t, { JWT_ALGORITHM: 'HS512', JWT_SECRET: long })
  const account = await register(app)
  const header = part(account.tokens.accessToken, 0)
  t.same(header, { alg: 'HS512', typ: 'at+jwt', kid: header.kid })
  const claims = { ...part(account.tokens.accessToken, 1), jti: randomUUID() }
  const table = [
    { alg: 'HS512', algorithm: 'sha512', status: 200 },
    { alg: 'HS256', algorithm: 'sha256', status: 401 },
    { alg: 'HS384', algorithm: 'sha384', status: 401 }
  ]
  for (const { alg, algorithm, status } of table) {
    const res = await profile(app, forge({ ...header, alg }, claims, input => hmac(input, algorithm, long)))
    t.equal(res.statusCode, status, `${alg} with the real secret: ${status}`)
    if (status === 401) t.equal(res.json().code, 'token_invalid')
  }
})

t.test('the Authorization header', async t => {
  const app = await build(t)
  const account = await register(app)
  const table: Array<{ name: string, authorization: string }> = [
    { name: 'Basic scheme', authorization: 'Basic dXNlcjpwYXNzd29yZA==' },
    { name: 'Basic scheme with the access token', authorization: `Basic ${account.tokens.accessToken}` },
    { name: 'Bearer with no token', authorization: 'Bearer' },
    { name: 'Bearer and a space, no token', authorization: 'Bearer ' },
    { name: 'the token with no scheme', authorization: account.tokens.accessToken },
    { name: 'two tokens', authorization: `Bearer ${account.tokens.accessToken} ${account.tokens.accessToken}` },
    { name: 'empty', authorization: '' }
  ]
  for (const { name, authorization } of table) {
    t.test(name, async t => {
      const res = await app.inject({ url: '/profile', headers: { authorization } })
      t.equal(res.statusCode, 401)
      t.equal(res.json().code, 'token_invalid')
      t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    })
  }

  t.test('no header: token_missing, and no error= in the challenge', async t => {
    const res = await app.inject({ url: '/profile' })
    t.equal(res.statusCode, 401)
    t.same(res.json(), { statusCode: 401, code: 'token_missing', error: 'Unauthorized', message: res.json().message })
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey"')
  })

  t.test('the scheme is case-insensitive', async t => {
    for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
      const res = await app.inject({ url: '/profile', headers: { authorization: `${scheme} ${account.tokens.accessToken}` } })
      t.equal(res.statusCode, 200, scheme)
    }
  })
})

t.test('JWT_LEEWAY', async t => {
  const expiredFiveSecondsAgo = (tokens: { accessToken: string }) =>
    forge(part(tokens.accessToken, 0), { ...part(tokens.accessToken, 1), jti: randomUUID(), iat: now() - 65, exp: now() - 5 })

  t.test('a token expired 5 s ago is accepted with JWT_LEEWAY=30', async t => {
    const app = await build(t, { JWT_LEEWAY: '30' })
    const account = await register(app)
    const res = await profile(app, expiredFiveSecondsAgo(account.tokens))
    t.equal(res.statusCode, 200)
  })

  t.test('and refused with the default leeway of 0', async t => {
    const app = await build(t)
    const account = await register(app)
    const res = await profile(app, expiredFiveSecondsAgo(account.tokens))
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'token_expired')
  })

  t.test('a token accepted before (its verification remembered) is refused once it expires', async t => {
    const app = await build(t)
    const account = await register(app)
    const exp = now() + 2
    const soon = forge(part(account.tokens.accessToken, 0), { ...part(account.tokens.accessToken, 1), jti: randomUUID(), exp })
    t.equal((await profile(app, soon)).statusCode, 200, 'accepted while it lives')
    t.equal((await profile(app, soon)).statusCode, 200, 'and again, from what was remembered')
    // Waits on the clock itself: past the second `exp` names.
    while (Date.now() < exp * 1000) await new Promise(resolve => setTimeout(resolve, exp * 1000 - Date.now() + 5))
    const res = await profile(app, soon)
    t.equal(res.statusCode, 401, 'refused from the second it expires')
    t.equal(res.json().code, 'token_expired')
  })

  t.test('the leeway lets an iat slightly in the future through, not one beyond it', async t => {
    const app = await build(t, { JWT_LEEWAY: '30' })
    const account = await register(app)
    const claims = part(account.tokens.accessToken, 1)
    const header = part(account.tokens.accessToken, 0)
    const near = forge(header, { ...claims, jti: randomUUID(), iat: now() + 5 })
    t.equal((await profile(app, near)).statusCode, 200, 'iat 5 s ahead, within 30 s')
    const far = forge(header, { ...claims, jti: randomUUID(), iat: now() + 120 })
    const res = await profile(app, far)
    t.equal(res.statusCode, 401, 'iat 2 min ahead')
    t.equal(res.json().code, 'token_invalid')
  })
})
