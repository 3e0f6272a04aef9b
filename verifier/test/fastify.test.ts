import { randomUUID } from 'node:crypto'
import t from 'tap'
import Fastify from 'fastify'
import { SignJWT, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose'
import { createVerifier, latchkeyVerifier } from '../src/index.js'
import { fakeIssuer } from './fake-issuer.js'
import { waitFor } from './wait.js'

async function service (t: Parameters<typeof fakeIssuer>[0], options: object) {
  const app = Fastify()
  await app.register(latchkeyVerifier, options as Parameters<typeof latchkeyVerifier>[1])
  app.get('/orders', async request => ({ user: request.latchkey?.sub, session: request.latchkey?.sid }))
  t.teardown(() => app.close())
  await app.ready()
  await app.latchkeyVerifier.ready()
  return app
}

t.test('the plugin: request.latchkey for a valid token, latchkey\'s error shape and challenge otherwise', async t => {
  const issuer = await fakeIssuer(t)
  const app = await service(t, issuer.options)
  const [sub, sid] = [randomUUID(), randomUUID()]
  const token = await issuer.token({ sub, sid })

  const ok = await app.inject({ url: '/orders', headers: { authorization: `bearer ${token}` } })
  t.equal(ok.statusCode, 200, 'the scheme is case-insensitive')
  t.same(ok.json(), { user: sub, session: sid })

  const none = await app.inject({ url: '/orders' })
  t.equal(none.statusCode, 401)
  t.same(none.json(), { statusCode: 401, code: 'token_missing', error: 'Unauthorized', message: 'No access token was sent.' })
  t.equal(none.headers['www-authenticate'], 'Bearer realm="latchkey"')
  const basic = await app.inject({ url: '/orders', headers: { authorization: 'Basic dXNlcjpwYXNz' } })
  t.equal(basic.json().code, 'token_missing', 'another scheme carries no access token')

  const bad = await app.inject({ url: '/orders', headers: { authorization: 'Bearer not-a-token' } })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().code, 'token_invalid')
  t.equal(bad.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')

  const heard = waitFor(app.latchkeyVerifier, 'revocation')
  issuer.revoke({ kind: 'session', id: sid })
  await heard
  const revoked = await app.inject({ url: '/orders', headers: { authorization: `Bearer ${token}` } })
  t.equal(revoked.statusCode, 401)
  t.equal(revoked.json().code, 'token_revoked')
})

t.test('the plugin fails closed with 503 and Retry-After when the feed is stale', async t => {
  const issuer = await fakeIssuer(t)
  const app = await service(t, { ...issuer.options, staleAfter: 0.1 })
  const stale = waitFor(app.latchkeyVerifier, 'stale')
  issuer.drop(true)
  await stale
  const res = await app.inject({ url: '/orders', headers: { authorization: `Bearer ${await issuer.token()}` } })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'service_unavailable')
  t.equal(res.headers['retry-after'], '5')
})

t.test('the plugin with DPoP: `Authorization: DPoP` and a proof for this request; Bearer is a binding mismatch', async t => {
  const issuer = await fakeIssuer(t)
  const verifier = createVerifier(issuer.options)
  t.teardown(() => verifier.close())
  const app = await service(t, { verifier })
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const jwk = await exportJWK(publicKey)
  const token = await issuer.token({ cnf: { jkt: await calculateJwkThumbprint(jwk) } })
  const ath = base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))))
  const proof = (htu: string) => new SignJWT({ jti: randomUUID(), htm: 'GET', htu, iat: Math.floor(Date.now() / 1000), ath })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(privateKey)

  // inject addresses the app as http://localhost:80.
  const ok = await app.inject({ url: '/orders?x=1', headers: { authorization: `DPoP ${token}`, dpop: await proof('http://localhost/orders') } })
  t.equal(ok.statusCode, 200)
  const missing = await app.inject({ url: '/orders', headers: { authorization: `DPoP ${token}` } })
  t.equal(missing.statusCode, 401)
  t.equal(missing.json().code, 'dpop_proof_invalid')
  t.equal(missing.headers['www-authenticate'], 'DPoP realm="latchkey", error="invalid_dpop_proof"')
  const elsewhere = await app.inject({ url: '/orders', headers: { authorization: `DPoP ${token}`, dpop: await proof('http://localhost/admin') } })
  t.equal(elsewhere.json().code, 'dpop_proof_invalid')
  const bearer = await app.inject({ url: '/orders', headers: { authorization: `Bearer ${token}` } })
  t.equal(bearer.statusCode, 401)
  t.equal(bearer.json().code, 'token_binding_mismatch')
})
