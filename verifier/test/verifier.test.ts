import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { CompactEncrypt, SignJWT, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose'
import { createVerifier, isVerifierError, type RevocationEvent, type Verifier, type VerifierOptions } from '../src/index.js'
import { maxAgeOf } from '../src/jwks.js'
import { createRevocations } from '../src/revocations.js'
import { accessClaims, fakeIssuer, signingKey } from './fake-issuer.js'
import { waitFor } from './wait.js'

type Issuer = Awaited<ReturnType<typeof fakeIssuer>>

async function verifierFor (t: Test, issuer: Issuer, options: Partial<VerifierOptions> = {}): Promise<Verifier> {
  const verifier = createVerifier({ ...issuer.options, ...options })
  t.teardown(() => verifier.close())
  await verifier.ready()
  return verifier
}

/** The §12 code a verification fails with. */
async function refusal (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    if (isVerifierError(err)) return err.code
    throw err
  }
  return 'accepted'
}

t.test('a fresh token is accepted and its claims returned', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  const sub = randomUUID()
  const claims = await verifier.verify(await issuer.token({ sub, ver: 3 }))
  t.equal(claims.sub, sub)
  t.equal(claims.ver, 3)
  t.equal(claims.typ, 'access')
})

t.test('every way a token can be wrong is a §12 code, never a crash', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  const now = Math.floor(Date.now() / 1000)
  const other = await signingKey()
  const cases: Array<[string, Promise<string> | string, string]> = [
    ['empty', '', 'token_missing'],
    ['not a JWT', 'garbage', 'token_invalid'],
    ['three dots of nothing', 'a.b.c', 'token_invalid'],
    ['another issuer', issuer.token({ iss: 'someone-else' }), 'token_invalid'],
    ['another audience', issuer.token({ aud: 'another-api' }), 'token_invalid'],
    ['expired', issuer.token({ iat: now - 600, exp: now - 300 }), 'token_expired'],
    ['not yet valid', issuer.token({ nbf: now + 300 }), 'token_invalid'],
    ['issued in the future', issuer.token({ iat: now + 300, exp: now + 600 }), 'token_invalid'],
    ['a refresh token', issuer.token({ typ: 'refresh' }), 'token_invalid'],
    ['no at+jwt header', issuer.token({}, { typ: 'JWT' }), 'token_invalid'],
    ['no kid', issuer.token({}, { kid: undefined }), 'token_invalid'],
    ['a kid latchkey never published', issuer.token({}, {}, other), 'token_invalid'],
    ['signed by another key under the published kid', issuer.token({}, { kid: issuer.key.kid }, other), 'token_invalid'],
    ['ver of the wrong type', issuer.token({ ver: '1' }), 'token_invalid'],
    ['sub not a user id', issuer.token({ sub: 'admin' }), 'token_invalid'],
    ['no jti', issuer.token({ jti: undefined }), 'token_invalid'],
    ['unknown crit header', issuer.raw({ alg: 'ES256', typ: 'at+jwt', kid: issuer.key.kid, crit: ['x-magic'], 'x-magic': true }, accessClaims(now)), 'token_invalid'],
    ['alg none', `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: issuer.key.kid }))}.${base64url.encode(JSON.stringify({ sub: randomUUID() }))}.`, 'token_invalid'],
    ['bound to a device or IP (bnd)', issuer.token({ bnd: 'abc' }), 'token_binding_mismatch'],
    ['encrypted, without an encryptionKey', 'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aaaa.bbbb.cccc', 'token_invalid']
  ]
  for (const [name, token, code] of cases) t.equal(await refusal(verifier.verify(await token)), code, name)
})

t.test('a key published with another alg than the token names is refused', async t => {
  const issuer = await fakeIssuer(t)
  issuer.state.keys = [{ ...issuer.key.jwk, alg: 'RS256' }]
  const verifier = await verifierFor(t, issuer)
  t.equal(await refusal(verifier.verify(await issuer.token())), 'token_invalid')
})

t.test('revocations from the stream: a session event ends its tokens, a user event every token below its version', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  const [sub, sid] = [randomUUID(), randomUUID()]
  const [sameSession, otherSession, newer] = await Promise.all([
    issuer.token({ sub, sid, ver: 1 }), issuer.token({ sub, ver: 1 }), issuer.token({ sub, ver: 2 })
  ])
  t.equal(await refusal(verifier.verify(sameSession)), 'accepted')

  const heard = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.id === sid)
  issuer.revoke({ kind: 'session', id: sid })
  await heard
  t.equal(await refusal(verifier.verify(sameSession)), 'token_revoked', 'the session\'s token is refused')
  t.equal(await refusal(verifier.verify(otherSession)), 'accepted', 'another session of the user is not')

  const bumped = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.id === sub)
  issuer.revoke({ kind: 'user', id: sub, tokenVersion: 2 })
  await bumped
  t.equal(await refusal(verifier.verify(otherSession)), 'token_revoked', 'ver 1 < 2: refused')
  t.equal(await refusal(verifier.verify(newer)), 'accepted', 'ver 2 is the current version')
})

t.test('what was revoked before the verifier started is read first (ready waits for it)', async t => {
  const issuer = await fakeIssuer(t)
  const sid = randomUUID()
  issuer.revoke({ kind: 'user', id: randomUUID(), tokenVersion: 4 })
  issuer.revoke({ kind: 'session', id: sid })
  const verifier = await verifierFor(t, issuer)
  t.equal(verifier.lastSeq, 2)
  t.equal(await refusal(verifier.verify(await issuer.token({ sid }))), 'token_revoked')
})

t.test('a dropped stream is resumed from the last seq: nothing lost, nothing twice', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  const seen: number[] = []
  verifier.on('revocation', e => seen.push(e.seq))
  issuer.revoke({ kind: 'session', id: randomUUID() })
  await waitFor(verifier, 'revocation', (e: RevocationEvent) => e.seq === 1)

  // Recorded while the stream is cut: the open stream never carries them.
  const missed = [issuer.revoke({ kind: 'session', id: randomUUID() }, true), issuer.revoke({ kind: 'user', id: randomUUID(), tokenVersion: 1 }, true)]
  const back = waitFor(verifier, 'revocation', (e: RevocationEvent) => e.seq === 4)
  const dropped = waitFor(verifier, 'disconnected')
  issuer.drop()
  await dropped
  issuer.revoke({ kind: 'session', id: randomUUID() })
  await back
  t.same(seen, [1, 2, 3, 4], 'every seq once, in order')
  t.equal(await refusal(verifier.verify(await issuer.token({ sid: missed[0].id }))), 'token_revoked', 'an event from the gap is applied')
  t.same(issuer.state.streamRequests.slice(0, 1), ['0'], 'the first stream started after the catch-up')
  t.ok(issuer.state.streamRequests.slice(1).every(id => Number(id) >= 1), 'and each reconnection resumed with Last-Event-ID')
})

t.test('a reset from the feed is reported and changes nothing already known', async t => {
  const issuer = await fakeIssuer(t)
  const sid = randomUUID()
  issuer.revoke({ kind: 'session', id: randomUUID() })
  issuer.revoke({ kind: 'session', id: sid })
  issuer.state.oldestKept = 2
  const verifier = createVerifier(issuer.options)
  t.teardown(() => verifier.close())
  const reset = waitFor(verifier, 'reset')
  await verifier.ready()
  await reset
  t.equal(verifier.lastSeq, 2)
  t.equal(await refusal(verifier.verify(await issuer.token({ sid }))), 'token_revoked')
})

t.test('fails closed once the feed has been down longer than staleAfter; introspects instead when told to', async t => {
  const issuer = await fakeIssuer(t)
  const strict = await verifierFor(t, issuer, { staleAfter: 0.2 })
  const asking = await verifierFor(t, issuer, { staleAfter: 0.2, fallback: 'introspect' })
  const token = await issuer.token()
  t.equal(await refusal(strict.verify(token)), 'accepted')

  const stale = Promise.all([waitFor(strict, 'stale'), waitFor(asking, 'stale')])
  issuer.drop(true)
  await stale
  t.equal(strict.fresh, false)
  t.equal(await refusal(strict.verify(token)), 'service_unavailable', 'the strict verifier refuses')

  t.equal(await refusal(asking.verify(token)), 'accepted', 'the other asks latchkey, which says valid')
  t.same(issuer.state.introspected, [token])
  issuer.state.introspection = { status: 401, body: { code: 'account_disabled' } }
  t.equal(await refusal(asking.verify(token)), 'token_revoked', 'a disabled account is a revoked token here')
  issuer.state.introspection = { status: 401, body: { code: 'token_expired' } }
  t.equal(await refusal(asking.verify(token)), 'token_expired')
  issuer.state.introspection = { status: 429, body: { code: 'rate_limited' } }
  t.equal(await refusal(asking.verify(token)), 'service_unavailable', 'no answer is no acceptance')

  const back = waitFor(strict, 'connected')
  issuer.state.feedDown = false
  await back
  t.equal(await refusal(strict.verify(token)), 'accepted', 'the feed back, local checks again')
})

t.test('before the feed was ever reached, nothing is accepted', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = createVerifier({ ...issuer.options, feedToken: 'wrong' })
  t.teardown(() => verifier.close())
  await waitFor(verifier, 'disconnected')
  t.equal(await refusal(verifier.verify(await issuer.token())), 'service_unavailable')
})

t.test('JWKS: cached for its max-age, refetched on an unknown kid at most once per 30 s', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  await verifier.verify(await issuer.token())
  await verifier.verify(await issuer.token())
  t.equal(issuer.state.jwksFetches, 1, 'one fetch for ready and two tokens')

  const rotated = await signingKey()
  issuer.state.keys = [issuer.key.jwk, rotated.jwk]
  t.equal(await refusal(verifier.verify(await issuer.token({}, {}, rotated))), 'accepted', 'a key published since is fetched on its first token')
  t.equal(issuer.state.jwksFetches, 2)
  const unknown = await signingKey()
  t.equal(await refusal(verifier.verify(await issuer.token({}, {}, unknown))), 'token_invalid')
  t.equal(issuer.state.jwksFetches, 2, 'a second unknown kid within 30 s fetches nothing')

  t.equal(maxAgeOf('public, max-age=120'), 120)
  t.equal(maxAgeOf('max-age="7", public'), 7)
  t.equal(maxAgeOf('no-store'), 0)
  t.equal(maxAgeOf(null), 300)
})

t.test('JWKS with max-age=0 is fetched for every token; a failed refetch keeps the stale copy', async t => {
  const issuer = await fakeIssuer(t)
  issuer.state.cacheControl = 'no-cache'
  const verifier = await verifierFor(t, issuer)
  await verifier.verify(await issuer.token())
  t.equal(issuer.state.jwksFetches, 2)
  issuer.state.cacheControl = 'max-age=300'
  await verifier.verify(await issuer.token())
  t.equal(issuer.state.jwksFetches, 3)
  await verifier.verify(await issuer.token())
  t.equal(issuer.state.jwksFetches, 3, 'the new max-age holds')
})

t.test('a JWKS refetch that fails keeps the stale copy for a while instead of refusing every token', async t => {
  const issuer = await fakeIssuer(t)
  issuer.state.cacheControl = 'no-cache'
  const verifier = await verifierFor(t, issuer)
  issuer.state.jwksDown = true
  t.equal(await refusal(verifier.verify(await issuer.token())), 'accepted', 'the keys fetched before still verify')
  t.equal(await refusal(verifier.verify(await issuer.token())), 'accepted')
  t.equal(issuer.state.jwksFetches, 2, 'and the failed fetch is not retried for every token')

  const never = createVerifier(issuer.options)
  t.teardown(() => never.close())
  await waitFor(never, 'connected')
  t.equal(await refusal(never.verify(await issuer.token())), 'service_unavailable', 'with no copy at all: service_unavailable')
})

t.test('encrypted tokens: decrypted with encryptionKey; then a bare signed token is refused (no downgrade)', async t => {
  const issuer = await fakeIssuer(t)
  const key = new Uint8Array(32).map((_b, i) => i + 1)
  const encryptionKey = base64url.encode(key)
  const kid = await calculateJwkThumbprint({ kty: 'oct', k: encryptionKey })
  const seal = async (jws: string, headerKid = kid) => await new CompactEncrypt(new TextEncoder().encode(jws))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', cty: 'JWT', kid: headerKid }).encrypt(key)
  const plain = await verifierFor(t, issuer)
  const holding = await verifierFor(t, issuer, { encryptionKey: [base64url.encode(new Uint8Array(32)), encryptionKey] })
  const sub = randomUUID()
  const jwe = await seal(await issuer.token({ sub }))
  t.equal((await holding.verify(jwe)).sub, sub, 'decrypted with the second key given')
  t.equal(await refusal(plain.verify(jwe)), 'token_invalid', 'without the key the JWE is refused')
  t.equal(await refusal(holding.verify(await issuer.token())), 'token_invalid', 'a bare JWS is refused where tokens are encrypted')
  t.equal(await refusal(holding.verify(await seal(await issuer.token(), 'unknown-kid'))), 'token_invalid', 'a JWE under a key it does not hold')
  t.equal(await refusal(holding.verify(jwe.slice(0, -4) + 'AAAA')), 'token_invalid', 'a tampered JWE')
  t.equal(await refusal(holding.verify(await seal(await issuer.token({ bnd: 'x' })))), 'token_binding_mismatch', 'the claims inside are checked as ever')
})

async function dpopKey () {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(publicKey)
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) }
}

async function proof (key: Awaited<ReturnType<typeof dpopKey>>, token: string, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  const ath = base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))))
  return await new SignJWT({ jti: randomUUID(), htm: 'GET', htu: 'https://api.example.com/orders', iat: Math.floor(Date.now() / 1000), ath, ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk, ...header }).sign(key.privateKey)
}

t.test('DPoP-bound tokens: accepted only with a fresh proof for this request, by the bound key, once', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = await verifierFor(t, issuer)
  const key = await dpopKey()
  const thief = await dpopKey()
  const token = await issuer.token({ cnf: { jkt: key.jkt } })
  const request = { method: 'GET', url: 'https://api.example.com/orders?page=2' }

  const good = await proof(key, token)
  t.equal((await verifier.verify(token, { dpop: { ...request, proof: good } })).cnf?.jkt, key.jkt, 'a proof for the request (query ignored, RFC 9449 §4.3)')
  t.equal(await refusal(verifier.verify(token, { dpop: { ...request, proof: good } })), 'dpop_proof_invalid', 'the same proof again is a replay')
  t.equal(await refusal(verifier.verify(token)), 'token_binding_mismatch', 'a bound token without DPoP, as a bearer token')

  const now = Math.floor(Date.now() / 1000)
  const cases: Array<[string, Promise<string> | string | undefined]> = [
    ['no proof header', undefined],
    ['not a JWT', 'nonsense'],
    ['another method', proof(key, token, { htm: 'POST' })],
    ['another URL', proof(key, token, { htu: 'https://api.example.com/admin' })],
    ['another token (ath)', proof(key, token, { ath: 'x' })],
    ['no ath', proof(key, token, { ath: undefined })],
    ['too old', proof(key, token, { iat: now - 120 })],
    ['from the future', proof(key, token, { iat: now + 120 })],
    ['no jti', proof(key, token, { jti: undefined })],
    ['not typ dpop+jwt', proof(key, token, {}, { typ: 'JWT' })],
    ['signed by another key than the bound one', proof(thief, token)],
    ['a jwk that did not sign it', proof(key, token, {}, { jwk: thief.jwk })]
  ]
  for (const [name, p] of cases) t.equal(await refusal(verifier.verify(token, { dpop: { ...request, proof: await p } })), 'dpop_proof_invalid', name)
})

t.test('revocations are kept while a token they concern can live, and no longer', async t => {
  const revocations = createRevocations()
  const now = Math.floor(Date.now() / 1000)
  const token = (iat: number, lifetime: number, claims: { sub?: string, sid?: string, ver?: number } = {}) =>
    ({ sub: randomUUID(), sid: randomUUID(), ver: 0, iat, exp: iat + lifetime, ...claims })
  const sid = randomUUID()
  t.equal(revocations.isRevoked(token(now, 300)), false, 'a 300 s token seen: the longest lifetime so far')
  revocations.apply({ seq: 1, kind: 'session', id: sid, at: new Date((now - 100) * 1000).toISOString() })
  revocations.prune(now, 0)
  t.equal(revocations.isRevoked(token(now - 150, 300, { sid })), true, 'an event younger than the longest lifetime stays')
  revocations.prune(now + 250, 0)
  t.equal(revocations.size, 0, 'once every token it could concern has expired, it goes')
  t.equal(revocations.isRevoked(token(now - 150, 600)), true, 'a longer-lived token from before what was dropped cannot be cleared: refused')
  t.equal(revocations.isRevoked(token(now, 600)), false, 'one issued after it is fine')
})
