import t from 'tap'
import { login, password, register, registerVerified, startSmtp, tcpProxy, uniqueEmail } from '../../test/helper.js'
import type { RevocationEvent } from '../src/index.js'
import { pair, startLatchkey, startService, verifierOptions } from './latchkey.js'
import { waitFor } from './wait.js'

const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { sub: string, sid: string, ver: number }
const kid = (token: string) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8')).kid as string

async function logout (baseUrl: string, accessToken: string, scope = 'local'): Promise<number> {
  const res = await fetch(`${baseUrl}/auth/logout`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ scope })
  })
  return res.status
}

t.test('a service beside latchkey accepts a fresh token and refuses it once the stream brought the logout', async t => {
  const latchkey = await startLatchkey(t, pair('ES256'))
  const { verifier, call } = await startService(t, verifierOptions(latchkey.baseUrl))
  const account = await register(latchkey.app)
  const token = account.tokens.accessToken
  t.same(await call(token), { status: 200, code: undefined, sub: account.id }, 'the fresh token is accepted')

  const heard = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.kind === 'session' && e.id === claims(token).sid)
  t.equal(await logout(latchkey.baseUrl, token), 204)
  await heard
  t.same(await call(token), { status: 401, code: 'token_revoked', sub: undefined }, 'refused once the logout arrived')
})

t.test('a password change and an admin disable reach the service too', async t => {
  const smtp = await startSmtp(t)
  const latchkey = await startLatchkey(t, pair('ES256'), { SMTP_URL: smtp.url })
  const { verifier, call } = await startService(t, verifierOptions(latchkey.baseUrl))

  const changer = await registerVerified(latchkey.app, smtp)
  const before = changer.tokens.accessToken
  t.equal((await call(before)).status, 200)
  const bumped = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.kind === 'user' && e.id === changer.id)
  const changed = await fetch(`${latchkey.baseUrl}/auth/password/change`, {
    method: 'POST',
    headers: { authorization: `Bearer ${before}`, 'content-type': 'application/json' },
    body: JSON.stringify({ currentPassword: password, newPassword: 'another horse battery staple' })
  })
  t.equal(changed.status, 200)
  const [event] = await bumped
  t.ok((event.tokenVersion as number) > claims(before).ver, 'the new version is above the old token\'s')
  t.equal((await call(before)).code, 'token_revoked', 'the token from before the change is refused')
  const renewed = (await changed.json() as { tokens: { accessToken: string } }).tokens.accessToken
  t.equal((await call(renewed)).status, 200, 'the pair the change returned is accepted')

  const disabled = await register(latchkey.app, uniqueEmail('disabled'))
  t.equal((await call(disabled.tokens.accessToken)).status, 200)
  const ended = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.kind === 'user' && e.id === disabled.id)
  await latchkey.app.accounts.changeUser(null, disabled.id, { disabled: true })
  await ended
  t.equal((await call(disabled.tokens.accessToken)).code, 'token_revoked', 'a disabled account\'s token is refused')
})

t.test('the feed cut and restored: the service resumes by seq and misses nothing from the gap', async t => {
  const latchkey = await startLatchkey(t, pair('ES256'))
  const proxy = await tcpProxy(t, latchkey.baseUrl)
  const { verifier, call } = await startService(t, verifierOptions(latchkey.baseUrl, `http://127.0.0.1:${proxy.port}`))
  const seen: number[] = []
  verifier.on('revocation', e => seen.push(e.seq))
  const start = verifier.lastSeq

  const first = await register(latchkey.app)
  const heard = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.id === claims(first.tokens.accessToken).sid)
  t.equal(await logout(latchkey.baseUrl, first.tokens.accessToken), 204)
  await heard

  const dropped = waitFor(verifier, 'disconnected')
  await proxy.close()
  await dropped
  const inGap = await Promise.all([register(latchkey.app), register(latchkey.app), register(latchkey.app)])
  for (const account of inGap) t.equal(await logout(latchkey.baseUrl, account.tokens.accessToken), 204)
  const lastSid = claims(inGap[2].tokens.accessToken).sid
  t.equal((await call(inGap[0].tokens.accessToken)).status, 200, 'during the gap (shorter than staleAfter) the service cannot know yet')

  const caughtUp = waitFor<[RevocationEvent]>(verifier, 'revocation', e => e.id === lastSid)
  await proxy.open()
  await caughtUp
  for (const account of inGap) t.equal((await call(account.tokens.accessToken)).code, 'token_revoked', 'a logout from the gap is applied')
  const expected = Array.from({ length: verifier.lastSeq - start }, (_v, i) => start + 1 + i)
  t.same(seen, expected, 'every seq after the start once, in order, across the cut')
})

t.test('latchkey stopped longer than staleAfter: the service fails closed, and recovers when latchkey is back', async t => {
  const key = pair('ES256')
  const latchkey = await startLatchkey(t, key)
  const { verifier, call } = await startService(t, { ...verifierOptions(latchkey.baseUrl), staleAfter: 0.3 })
  const account = await register(latchkey.app)
  t.equal((await call(account.tokens.accessToken)).status, 200)

  const stale = waitFor(verifier, 'stale')
  await latchkey.app.close()
  await stale
  const refused = await call(account.tokens.accessToken)
  t.same(refused, { status: 503, code: 'service_unavailable', sub: undefined }, 'no token is accepted blind')

  const back = waitFor(verifier, 'connected')
  await startLatchkey(t, key, {}, latchkey.port)
  await back
  t.equal((await call(account.tokens.accessToken)).status, 200, 'the feed back, the token is accepted again')
})

t.test('a key rotation: the key published as next verifies at once; a key never seen is fetched on its first token', async t => {
  const [k1, k2, k3] = [pair('ES256'), pair('ES256'), pair('ES256')]
  const step1 = await startLatchkey(t, k1, { JWT_NEXT_PUBLIC_KEY: k2.publicPem })
  const { verifier, call } = await startService(t, verifierOptions(step1.baseUrl))
  const account = await register(step1.app)
  t.equal((await call(account.tokens.accessToken)).status, 200)
  t.equal(step1.jwksFetches.length, 1, 'the service fetched the JWKS once: the current and the next key')

  // The same address, restarted with new variables (SPEC §10's drill).
  const restart = async (key: ReturnType<typeof pair>, previous: ReturnType<typeof pair>) => {
    const back = waitFor(verifier, 'connected')
    const next = await startLatchkey(t, key, { JWT_PREVIOUS_PUBLIC_KEYS: previous.publicPem }, step1.port)
    await back
    return next
  }
  await step1.app.close()
  const step2 = await restart(k2, k1)
  const signedByNext = (await login(step2.app, account.email)).accessToken
  t.not(kid(signedByNext), kid(account.tokens.accessToken), 'signed by the new key')
  t.equal((await call(signedByNext)).status, 200, 'a token of the key published as next is accepted')
  t.equal(step2.jwksFetches.length, 0, 'from the copy fetched before the switch')

  await step2.app.close()
  const step3 = await restart(k3, k2)
  const unseen = (await login(step3.app, account.email)).accessToken
  t.equal((await call(unseen)).status, 200, 'a token of a key the cached copy lacks is accepted')
  t.equal(step3.jwksFetches.length, 1, 'after one refetch')
  t.equal((await call(signedByNext)).status, 200, 'the previous key stays accepted')
})
