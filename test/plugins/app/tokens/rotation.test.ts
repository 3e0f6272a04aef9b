import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { build, refresh, register, type Env } from '../../../helper.js'
import { asymmetric, encryptionKey, jwks, login, pair, part, profile, verifiedByJwks } from './fixtures.js'

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
