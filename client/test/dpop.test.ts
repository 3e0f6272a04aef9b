import t from 'tap'
import { createLatchkey, type Tokens } from '../src/index.js'
import { claims, expire, password, serve, uniqueEmail } from './helper.js'

const jwtClaims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))

t.test('created with a DPoP key: a bound session, a fresh proof on every call and on refresh', async t => {
  const { baseUrl, refreshes } = await serve(t, { ACCESS_TOKEN_TTL: '5s' })
  const proofs: string[] = []
  const recording = async (request: Request) => {
    const proof = request.headers.get('dpop')
    if (proof !== null) proofs.push(proof)
    return await fetch(request)
  }
  const dpopKey = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
  const latchkey = createLatchkey({ baseUrl, dpopKey, fetch: recording })
  const email = uniqueEmail('dpop-client')

  const registered = await latchkey.register({ email, password })
  t.equal(registered.tokens.tokenType, 'DPoP', 'the session is bound')
  t.ok(jwtClaims(registered.tokens.accessToken).cnf?.jkt, 'to a key')

  for (let i = 0; i < 3; i++) t.equal((await latchkey.api.GET('/profile')).response.status, 200, `call ${i + 1}`)
  const stolen = await fetch(`${baseUrl}/profile`, { headers: { authorization: `Bearer ${registered.tokens.accessToken}` } })
  t.equal(stolen.status, 401, 'the token alone is of no use')
  t.equal((await stolen.json()).code, 'token_binding_mismatch')

  await expire(registered.tokens.accessToken)
  const after = await latchkey.api.GET('/sessions')
  t.equal(after.response.status, 200, 'an expired token is refreshed with a proof, and the call retried with a new one')
  t.same(refreshes(), [200])
  const renewed = await latchkey.tokens() as Tokens
  t.equal(renewed.tokenType, 'DPoP')
  t.equal(claims(renewed.accessToken).sid, claims(registered.tokens.accessToken).sid, 'the same session')
  t.same(jwtClaims(renewed.accessToken).cnf, jwtClaims(registered.tokens.accessToken).cnf, 'bound to the same key')

  t.equal(new Set(proofs).size, proofs.length, 'no proof was sent twice')
  t.ok(proofs.length >= 7, 'register, three calls, the refused call, the refresh, the retry')

  await latchkey.logout()
  t.equal(await latchkey.tokens(), null)
  const dead = await fetch(`${baseUrl}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: renewed.refreshToken }) })
  t.equal(dead.status, 400, 'the logout (with its proof) ended the session')
})
