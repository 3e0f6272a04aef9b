import { createCipheriv, createHmac, createPublicKey, generateKeyPairSync, randomBytes, verify as cryptoVerify, type JsonWebKey } from 'node:crypto'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { calculateJwkThumbprint, compactDecrypt, CompactEncrypt } from 'jose'
import { authed, build, lastCode, refresh, register, startSmtp, type App, type Env } from '../../../helper.js'

type Json = Record<string, any>
const part = (token: string, index: number): Json => JSON.parse(Buffer.from(token.split('.')[index], 'base64url').toString('utf8'))
const root = fileURLToPath(new URL('../../../..', import.meta.url))

const pair = (alg: 'RS256' | 'ES256' | 'EdDSA') => {
  const { privateKey, publicKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')
  return {
    alg,
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }) as string
  }
}
const asymmetric = (key: ReturnType<typeof pair>): Env => ({ JWT_ALGORITHM: key.alg, JWT_PRIVATE_KEY: key.privatePem, JWT_SECRET: undefined })
const encryptionKey = () => randomBytes(32).toString('base64url')

async function jwks (app: App): Promise<Json[]> {
  const res = await app.inject({ url: '/.well-known/jwks.json' })
  if (res.statusCode !== 200) throw new Error(`jwks: ${res.statusCode}`)
  return res.json().keys
}

/** What another service does with a JWKS it fetched: plain node:crypto, no latchkey code. */
function verifiedByJwks (token: string, keys: Json[]): boolean {
  const [h, p, s] = token.split('.')
  const header = part(token, 0)
  const jwk = keys.find(k => k.kid === header.kid)
  if (!jwk || jwk.alg !== header.alg) return false
  const { kty, crv, n, e, x, y } = jwk
  const key = createPublicKey({ key: { kty, crv, n, e, x, y } as JsonWebKey, format: 'jwk' })
  const data = Buffer.from(`${h}.${p}`)
  const signature = Buffer.from(s, 'base64url')
  if (jwk.alg === 'RS256') return cryptoVerify('sha256', data, key, signature)
  if (jwk.alg === 'ES256') return cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
  return cryptoVerify(null, data, key, signature)
}

/** A compact JWE with any header, made the way RFC 7516 says, to try headers jose would not write. */
function sealRaw (plaintext: string, header: Json, key: string): string {
  const encodedHeader = Buffer.from(JSON.stringify(header)).toString('base64url')
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(key, 'base64url'), iv).setAAD(Buffer.from(encodedHeader))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return [encodedHeader, '', iv.toString('base64url'), ciphertext.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
}

const profile = (app: App, token: string) => authed(app, token, { url: '/profile' })
const check = (app: App, token: string) => app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token } })
const login = async (app: App, email: string) => {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'correct horse battery staple' } })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return res.json().tokens as { accessToken: string, refreshToken: string }
}

/** register → profile → verify → refresh → verify → logout → revoked, on one instance. */
async function lifecycle (t: Test, app: App) {
  const account = await register(app)
  t.equal((await profile(app, account.tokens.accessToken)).statusCode, 200, 'profile with the first access token')
  t.match((await check(app, account.tokens.accessToken)).json(), { valid: true, type: 'access', sub: account.id })
  const rotated = await refresh(app, account.tokens.refreshToken)
  t.equal(rotated.statusCode, 200, 'refresh')
  const tokens = rotated.json().tokens
  t.equal((await profile(app, tokens.accessToken)).statusCode, 200, 'profile with the refreshed access token')
  t.match((await check(app, tokens.refreshToken)).json(), { valid: true, type: 'refresh', sub: account.id })
  t.equal((await check(app, account.tokens.refreshToken as string)).json().code, 'token_revoked', 'the rotated refresh token is blacklisted')
  t.equal((await authed(app, tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: {} })).statusCode, 204, 'logout')
  const after = await profile(app, tokens.accessToken)
  t.equal(after.statusCode, 401)
  t.equal(after.json().code, 'token_revoked', 'the access token dies with the logout')
  t.equal((await refresh(app, tokens.refreshToken)).json().code, 'token_revoked', 'so does the refresh token')
  return { account, tokens }
}

for (const alg of ['RS256', 'ES256', 'EdDSA'] as const) {
  t.test(`the whole lifecycle under ${alg}, with no HMAC secret at all`, async t => {
    const key = pair(alg)
    const smtp = await startSmtp(t)
    const app = await build(t, { ...asymmetric(key), SMTP_URL: smtp.url })
    t.equal(app.config.JWT_SECRET, undefined, 'no JWT_SECRET is configured or generated')

    const { account, tokens } = await lifecycle(t, app)
    const header = part(tokens.accessToken, 0)
    t.same(header, { alg, typ: 'at+jwt', kid: header.kid })
    t.same(part(tokens.refreshToken, 0), { alg, typ: 'JWT', kid: header.kid })

    const res = await app.inject({ url: '/.well-known/jwks.json' })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['cache-control'], 'public, max-age=300')
    const keys: Json[] = res.json().keys
    t.equal(keys.length, 1)
    t.same(Object.keys(keys[0]).sort(), (alg === 'RS256' ? ['alg', 'e', 'kid', 'kty', 'n', 'use'] : alg === 'ES256' ? ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'] : ['alg', 'crv', 'kid', 'kty', 'use', 'x']).sort(), 'public parameters only')
    t.match(keys[0], { alg, use: 'sig', kid: header.kid })
    t.equal(keys[0].kid, await calculateJwkThumbprint(keys[0] as any), 'kid = the RFC 7638 thumbprint (as jose computes it)')
    t.ok(verifiedByJwks(tokens.accessToken, keys), 'the access token verifies with node:crypto and the published key alone')
    t.notOk(verifiedByJwks(tokens.accessToken.slice(0, -4) + (tokens.accessToken.endsWith('AAAA') ? 'BBBB' : 'AAAA'), keys), 'and a changed signature does not (the check can fail)')

    // Email codes have their own root: they work although there is no HMAC secret.
    const code = await lastCode(app, smtp, account.email)
    const verified = await app.inject({ method: 'POST', url: '/auth/email/verify', payload: { email: account.email, code } })
    t.equal(verified.statusCode, 200, 'the emailed code confirms the address')
  })
}

t.test('HS256 with TOKEN_ENCRYPTION_KEY: every token is a compact JWE (dir, A256GCM, cty JWT)', async t => {
  const key = encryptionKey()
  const app = await build(t, { TOKEN_ENCRYPTION_KEY: key, JWKS_MAX_AGE: '1m' })
  await lifecycle(t, app)
  const res = await app.inject({ url: '/.well-known/jwks.json' })
  t.same(res.json(), { keys: [] }, 'an HMAC secret is never published')
  t.equal(res.headers['cache-control'], 'public, max-age=60')

  const fresh = await register(app)
  const access = fresh.tokens.accessToken
  t.equal(access.split('.').length, 5)
  const header = part(access, 0)
  t.same(header, { alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: header.kid })
  t.equal(header.kid, await calculateJwkThumbprint({ kty: 'oct', k: key }), 'the JWE kid is the thumbprint of the key as an oct JWK')
  t.notOk(access.includes(Buffer.from(`"sub":"${fresh.id}"`).toString('base64url').slice(4, -4)), 'the claims are not readable')

  // An independent implementation opens it, and what it makes is accepted.
  const { plaintext, protectedHeader } = await compactDecrypt(access, Buffer.from(key, 'base64url'))
  t.equal(protectedHeader.cty, 'JWT')
  const jws = new TextDecoder().decode(plaintext)
  const inner = part(jws, 1)
  t.match(inner, { sub: fresh.id, typ: 'access' })
  const hmac = createHmac('sha256', 'test-secret-test-secret-test-secret-0123').update(jws.split('.').slice(0, 2).join('.')).digest('base64url')
  t.equal(hmac, jws.split('.')[2], 'inside is the HS256 token, signed as always')
  const seal = (plain: string, protectedHeader: Json, k = key) => new CompactEncrypt(new TextEncoder().encode(plain)).setProtectedHeader(protectedHeader as any).encrypt(Buffer.from(k, 'base64url'))
  t.equal((await profile(app, await seal(jws, { alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: header.kid }))).statusCode, 200, "jose's JWE of our token is accepted")
  t.equal((await profile(app, sealRaw(jws, header, key))).statusCode, 200, 'and so is the test\'s own, so its refusals below mean something')

  const [h, k, iv, c, tag] = access.split('.')
  const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1)
  const refused: Array<[string, string | Promise<string>]> = [
    ['the bare signed token inside (no downgrade)', jws],
    ['ciphertext changed', [h, k, iv, flip(c), tag].join('.')],
    ['tag changed', [h, k, iv, c, flip(tag)].join('.')],
    ['iv changed', [h, k, flip(iv), c, tag].join('.')],
    ['truncated', access.slice(0, -10)],
    ['four segments', [h, k, iv, c].join('.')],
    ['an encrypted key where dir has none', [h, 'AAAA', iv, c, tag].join('.')],
    ['header enc changed (A128GCM)', [Buffer.from(JSON.stringify({ ...header, enc: 'A128GCM' })).toString('base64url'), k, iv, c, tag].join('.')],
    ['jose JWE with enc A128GCM', seal(jws, { alg: 'dir', enc: 'A128GCM', cty: 'JWT', kid: header.kid }, randomBytes(16).toString('base64url'))],
    ['jose JWE under another key', seal(jws, { alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: header.kid }, encryptionKey())],
    ['a JWE with zip', sealRaw(jws, { ...header, zip: 'DEF' }, key)],
    ['a JWE with crit', sealRaw(jws, { ...header, crit: ['exp'], exp: 1 }, key)],
    ['a JWE with alg A256KW', sealRaw(jws, { ...header, alg: 'A256KW' }, key)],
    ['a JWE with cty missing', sealRaw(jws, { alg: 'dir', enc: 'A256GCM', kid: header.kid }, key)],
    ['jose JWE without kid', seal(jws, { alg: 'dir', enc: 'A256GCM', cty: 'JWT' })],
    ['a JWE of garbage', seal('not a token', { alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: header.kid })]
  ]
  for (const [name, pending] of refused) {
    const token = await pending
    const res = await profile(app, token)
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.json().code, 'token_invalid', `${name}: token_invalid`)
    t.equal((await check(app, token)).json().code, 'token_invalid', `${name}: verify says token_invalid`)
  }
  const bareRefresh = new TextDecoder().decode((await compactDecrypt(fresh.tokens.refreshToken as string, Buffer.from(key, 'base64url'))).plaintext)
  const res2 = await refresh(app, bareRefresh)
  t.equal(res2.statusCode, 400, 'a bare refresh token is 400 on refresh')
  t.equal(res2.json().code, 'token_invalid')
  t.equal((await refresh(app, fresh.tokens.refreshToken)).statusCode, 200, 'the JWE refresh token still rotates: nothing was consumed')
})

t.test('kid: the thumbprint, unless JWT_KEY_ID names it; HS tokens carry one too', async t => {
  const key = pair('ES256')
  const named = await build(t, { ...asymmetric(key), JWT_KEY_ID: 'key-2026-12' })
  const account = await register(named)
  t.equal(part(account.tokens.accessToken, 0).kid, 'key-2026-12')
  t.equal((await jwks(named))[0].kid, 'key-2026-12')
  t.equal((await profile(named, account.tokens.accessToken)).statusCode, 200)

  const hs = await build(t)
  const hsAccount = await register(hs)
  const secret = 'test-secret-test-secret-test-secret-0123'
  t.equal(part(hsAccount.tokens.accessToken, 0).kid, await calculateJwkThumbprint({ kty: 'oct', k: Buffer.from(secret).toString('base64url') }))
})

t.test('npm run keys:generate prints a PKCS#8 PEM and the kid the service gives it', async t => {
  for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/keys-generate.ts', '--alg', alg], { cwd: root })
    const kid = /^# kid: (\S+)/.exec(stdout)?.[1]
    const privatePem = /-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----\n/.exec(stdout)?.[0]
    const publicPem = /-----BEGIN PUBLIC KEY-----[^-]+-----END PUBLIC KEY-----\n/.exec(stdout)?.[0]
    t.ok(kid && privatePem && publicPem, `${alg}: a kid, a private and a public key`)
    const app = await build(t, { JWT_ALGORITHM: alg, JWT_PRIVATE_KEY: privatePem, JWT_NEXT_PUBLIC_KEY: pair(alg).publicPem })
    t.equal((await jwks(app))[0].kid, kid, `${alg}: the printed kid is the published one`)
    await app.close()
  }
  await t.rejects(promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/keys-generate.ts', '--alg', 'HS256'], { cwd: root }), { code: 2 }, 'an unknown algorithm is refused')
})

t.test('JWT_PRIVATE_KEY_FILE, and PEMs with literal \\n as some platforms pass them', async t => {
  const key = pair('EdDSA')
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-keys-'))
  writeFileSync(join(dir, 'key.pem'), key.privatePem)
  const fromFile = await build(t, { JWT_ALGORITHM: 'EdDSA', JWT_PRIVATE_KEY_FILE: join(dir, 'key.pem') })
  const flat = await build(t, { JWT_ALGORITHM: 'EdDSA', JWT_PRIVATE_KEY: key.privatePem.replace(/\n/g, '\\n') })
  t.same(await jwks(fromFile), await jwks(flat), 'the same key either way')
  const account = await register(fromFile)
  t.equal((await profile(flat, account.tokens.accessToken)).statusCode, 200, 'one instance verifies the other\'s tokens')
})

t.test('boot refusals name the variable (and never echo key material)', async t => {
  const rsa = pair('RS256')
  const ec = pair('ES256')
  const short = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' })
  const sec1 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'sec1' }) as string
  const cases: Array<[string, Env, RegExp]> = [
    ['an RSA key under ES256', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: rsa.privatePem }, /JWT_PRIVATE_KEY holds an RSA key, but JWT_ALGORITHM=ES256 needs a P-256 EC key/],
    ['a P-256 key under EdDSA', { JWT_ALGORITHM: 'EdDSA', JWT_PRIVATE_KEY: ec.privatePem }, /JWT_PRIVATE_KEY holds a P-256 EC key, but JWT_ALGORITHM=EdDSA/],
    ['a P-384 key under ES256', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: p384.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string }, /JWT_PRIVATE_KEY holds an EC key on secp384r1/],
    ['a 1024-bit RSA key', { JWT_ALGORITHM: 'RS256', JWT_PRIVATE_KEY: short }, /JWT_PRIVATE_KEY holds an RSA key of 1024 bits \(at least 2048/],
    ['a malformed PEM', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----' }, /JWT_PRIVATE_KEY is not a valid PEM private key/],
    ['not a PEM at all', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: 'my-key' }, /JWT_PRIVATE_KEY must be a PKCS#8 PEM/],
    ['a SEC1 PEM, not PKCS#8', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: sec1 }, /JWT_PRIVATE_KEY must be a PKCS#8 PEM/],
    ['a public key as the private key', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: ec.publicPem }, /JWT_PRIVATE_KEY must be a PKCS#8 PEM/],
    ['ES256 without a key', { JWT_ALGORITHM: 'ES256' }, /JWT_ALGORITHM=ES256 needs JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE/],
    ['both the key and its file', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: ec.privatePem, JWT_PRIVATE_KEY_FILE: '/nonexistent' }, /JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, not both/],
    ['a key file that is not there', { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY_FILE: '/nonexistent/key.pem' }, /JWT_PRIVATE_KEY_FILE: cannot read \/nonexistent\/key.pem \(ENOENT\)/],
    ['an HS384 secret of 40 characters', { JWT_ALGORITHM: 'HS384', JWT_SECRET: 'x'.repeat(40) }, /JWT_SECRET must be at least 48 characters for JWT_ALGORITHM=HS384/],
    ['an HS512 secret of 63 characters', { JWT_ALGORITHM: 'HS512', JWT_SECRET: 'x'.repeat(63) }, /JWT_SECRET must be at least 64 characters/],
    ['a short previous secret', { JWT_PREVIOUS_SECRETS: 'x'.repeat(31) }, /JWT_PREVIOUS_SECRETS: secret 1 must be at least 32/],
    ['a previous HS512 secret of 40', { JWT_PREVIOUS_SECRETS: `${'y'.repeat(40)},HS512:${'x'.repeat(40)}` }, /JWT_PREVIOUS_SECRETS: secret 2 must be at least 64/],
    ['junk among the previous public keys', { JWT_PREVIOUS_PUBLIC_KEYS: `${rsa.publicPem}\nnot a key` }, /JWT_PREVIOUS_PUBLIC_KEYS must hold PEM public keys/],
    ['a private key among the previous public keys', { JWT_PREVIOUS_PUBLIC_KEYS: rsa.privatePem }, /JWT_PREVIOUS_PUBLIC_KEYS must hold PEM public keys/],
    ['a P-384 next key', { JWT_NEXT_PUBLIC_KEY: p384.publicKey.export({ format: 'pem', type: 'spki' }) as string }, /JWT_NEXT_PUBLIC_KEY: public key 1 is an EC key on secp384r1/],
    ['two next keys', { JWT_NEXT_PUBLIC_KEY: rsa.publicPem + ec.publicPem }, /JWT_NEXT_PUBLIC_KEY must hold one public key/],
    ['a short encryption key', { TOKEN_ENCRYPTION_KEY: randomBytes(16).toString('base64url') }, /TOKEN_ENCRYPTION_KEY/],
    ['previous encryption keys without a current one', { TOKEN_ENCRYPTION_PREVIOUS_KEYS: encryptionKey() }, /TOKEN_ENCRYPTION_PREVIOUS_KEYS needs TOKEN_ENCRYPTION_KEY/],
    ['an unknown algorithm', { JWT_ALGORITHM: 'PS256' }, /JWT_ALGORITHM/]
  ]
  for (const [name, env, message] of cases) {
    const err = await build(t, env).then(() => undefined, (err: Error) => err)
    t.match(err?.message, message, name)
    for (const value of Object.values(env)) {
      if (value !== undefined && value.length > 20) t.notOk(err?.message.includes(value.trim().split('\n')[1] ?? value), `${name}: the value is not echoed`)
    }
  }
})

t.test('production refuses to start without APP_SECRET, naming it', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'latchkey-keys-'))
  await t.rejects(build(t, { NODE_ENV: 'production', SMTP_URL: 'smtp://127.0.0.1:2525', APP_SECRET: undefined, DATA_DIR: dataDir }), /APP_SECRET is required when NODE_ENV=production/)
  const app = await build(t, { NODE_ENV: 'production', SMTP_URL: 'smtp://127.0.0.1:2525', ...asymmetric(pair('ES256')) })
  t.equal(app.config.JWT_SECRET, undefined, 'an asymmetric production deployment needs no JWT_SECRET')
  await t.rejects(build(t, { NODE_ENV: 'production', SMTP_URL: 'smtp://127.0.0.1:2525', JWT_ALGORITHM: 'ES256', JWT_SECRET: undefined }), /JWT_PRIVATE_KEY/)
})

t.test('outside production APP_SECRET is generated once in DATA_DIR and kept', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'latchkey-keys-'))
  const first = await build(t, { APP_SECRET: undefined, DATA_DIR: dataDir })
  const generated = first.config.APP_SECRET
  t.ok(generated.length >= 32)
  t.not(generated, first.config.JWT_SECRET, 'its own secret, not the signing one')
  await first.close()
  const second = await build(t, { APP_SECRET: undefined, DATA_DIR: dataDir })
  t.equal(second.config.APP_SECRET, generated, 'the next start uses the same one')
})

t.test('rotating the signing key leaves the email codes in flight working', async t => {
  const smtp = await startSmtp(t)
  const before = await build(t, { ...asymmetric(pair('ES256')), SMTP_URL: smtp.url })
  const account = await register(before)
  const code = await lastCode(before, smtp, account.email)
  await before.close()
  const after = await build(t, { ...asymmetric(pair('EdDSA')), SMTP_URL: smtp.url })
  const res = await after.inject({ method: 'POST', url: '/auth/email/verify', payload: { email: account.email, code } })
  t.equal(res.statusCode, 200, 'the code mailed before the switch confirms the address after it')
})

/**
 * SPEC §10's drill, across restarts on one database: 0 → publish next → sign
 * with it → retire the old. `stages` are the environments of the four starts.
 */
async function drill (t: Test, stages: [Env, Env, Env, Env], published: boolean) {
  const start = (stage: number) => build(t, stages[stage])
  const s0 = await start(0)
  const account = await register(s0)
  const first = account.tokens
  await s0.close()

  // 1. The next key is accepted (and published) but signs nothing yet.
  const s1 = await start(1)
  const cached = await jwks(s1)
  t.equal((await profile(s1, first.accessToken)).statusCode, 200, 'step 1: a token from before still works')
  const atStep1 = await login(s1, account.email)
  t.equal(part(atStep1.accessToken, 0).kid, part(first.accessToken, 0).kid, 'step 1: still signed with the old key')

  // 2. Sign with the new key. During a rolling restart, step-1 instances run beside step-2 ones.
  const s2 = await start(2)
  const atStep2 = await login(s2, account.email)
  t.not(part(atStep2.accessToken, 0).kid, part(first.accessToken, 0).kid, 'step 2: signed with the new key')
  t.equal((await profile(s1, atStep2.accessToken)).statusCode, 200, 'step 2: an instance still at step 1 accepts the new tokens')
  if (published) t.ok(verifiedByJwks(atStep2.accessToken, cached), 'step 2: a JWKS fetched before the switch verifies tokens signed after it')
  t.equal((await profile(s2, first.accessToken)).statusCode, 200, 'step 2: tokens signed before keep working')
  t.equal((await profile(s2, atStep1.accessToken)).statusCode, 200)
  const renewed = await refresh(s2, first.refreshToken)
  t.equal(renewed.statusCode, 200, 'step 2: a refresh token from before rotates')
  t.not(part(renewed.json().tokens.accessToken, 0).kid, part(first.accessToken, 0).kid, 'into tokens of the new key')
  await s1.close()
  await s2.close()

  // 3. Retire the old key (after the longest token it signed has expired): what it signed is refused.
  const s3 = await start(3)
  t.equal((await profile(s3, atStep2.accessToken)).statusCode, 200, 'step 3: the new key\'s tokens work')
  t.equal((await refresh(s3, renewed.json().tokens.refreshToken)).statusCode, 200)
  const old = await profile(s3, atStep1.accessToken)
  t.equal(old.statusCode, 401, 'step 3: a token of the retired key is refused')
  t.equal(old.json().code, 'token_invalid')
  const oldRefresh = await refresh(s3, atStep1.refreshToken)
  t.equal(oldRefresh.statusCode, 400, 'and its refresh token')
  t.equal(oldRefresh.json().code, 'token_invalid')
  return { cached, final: published ? await jwks(s3) : [] }
}

t.test('rotation drill: ES256 key to a new ES256 key', async t => {
  const [k1, k2] = [pair('ES256'), pair('ES256')]
  const { cached, final } = await drill(t, [
    asymmetric(k1),
    { ...asymmetric(k1), JWT_NEXT_PUBLIC_KEY: k2.publicPem },
    { ...asymmetric(k2), JWT_PREVIOUS_PUBLIC_KEYS: k1.publicPem },
    asymmetric(k2)
  ], true)
  t.equal(cached.length, 2, 'step 1 publishes the current and the next key')
  t.equal(final.length, 1, 'step 3 publishes only the new key')
  t.equal(final[0].kid, cached[1].kid, 'the next key of step 1 is the current key of step 3')
})

t.test('rotation drill: RS256 to EdDSA (a rotation may change algorithm), two previous keys in one value', async t => {
  const [older, k1, k2] = [pair('RS256'), pair('RS256'), pair('EdDSA')]
  await drill(t, [
    asymmetric(k1),
    { ...asymmetric(k1), JWT_NEXT_PUBLIC_KEY: k2.publicPem },
    { ...asymmetric(k2), JWT_PREVIOUS_PUBLIC_KEYS: older.publicPem + k1.publicPem },
    asymmetric(k2)
  ], true)
})

t.test('rotation drill: HS256 secret to a new secret (JWT_PREVIOUS_SECRETS; nothing published)', async t => {
  const [s1, s2] = ['a'.repeat(16) + randomBytes(24).toString('base64url'), 'b'.repeat(16) + randomBytes(24).toString('base64url')]
  await drill(t, [
    { JWT_SECRET: s1 },
    { JWT_SECRET: s1, JWT_PREVIOUS_SECRETS: s2 },
    { JWT_SECRET: s2, JWT_PREVIOUS_SECRETS: s1 },
    { JWT_SECRET: s2 }
  ], false)
})

t.test('rotation drill: HS256 to ES256, the next key published while HS256 still signs', async t => {
  const secret = randomBytes(32).toString('base64url')
  const key = pair('ES256')
  const { cached } = await drill(t, [
    { JWT_SECRET: secret },
    { JWT_SECRET: secret, JWT_NEXT_PUBLIC_KEY: key.publicPem },
    { ...asymmetric(key), JWT_PREVIOUS_SECRETS: secret },
    asymmetric(key)
  ], true)
  t.equal(cached.length, 1, 'under HS256 the JWKS holds the next key only, never the secret')
})

t.test('rotation drill: TOKEN_ENCRYPTION_KEY (TOKEN_ENCRYPTION_PREVIOUS_KEYS still decrypt)', async t => {
  const [e1, e2] = [encryptionKey(), encryptionKey()]
  const secret = { JWT_SECRET: randomBytes(32).toString('base64url') }
  // The signing key stays; the kid the drill looks at is the JWE's.
  await drill(t, [
    { ...secret, TOKEN_ENCRYPTION_KEY: e1 },
    { ...secret, TOKEN_ENCRYPTION_KEY: e1, TOKEN_ENCRYPTION_PREVIOUS_KEYS: e2 },
    { ...secret, TOKEN_ENCRYPTION_KEY: e2, TOKEN_ENCRYPTION_PREVIOUS_KEYS: e1 },
    { ...secret, TOKEN_ENCRYPTION_KEY: e2 }
  ], false)
})
