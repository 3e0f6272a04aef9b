import t from 'tap'
import { build } from './helper.js'

t.test('the log redacts secrets by their exact paths and keeps an error\'s own code', async t => {
  const lines: string[] = []
  const app = await build(t, { LOG_LEVEL: 'info' }, { logStream: { write: line => { lines.push(line) } } })
  const deadlock = Object.assign(new Error('deadlock detected'), { code: '40P01' })
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
  app.log.info({
    body: { email: 'ada@example.com', password: 'secret-password', currentPassword: 'secret-current', newPassword: 'secret-new', refreshToken: 'secret-refresh', token: 'secret-token', code: '123456' },
    tokens: { accessToken: 'secret-a', refreshToken: 'secret-r', tokenType: 'Bearer' },
    mail: { to: 'ada@example.com', text: 'code 654321', html: '<p>654321</p>' }
  }, 'everything at once')
  app.log.error({ err: deadlock }, 'a transaction failed')
  app.log.error({ err: refused }, 'backend unavailable')
  // A real request, with everything a client sends that must not reach the log.
  const res = await app.inject({
    method: 'POST',
    url: '/auth/login',
    headers: { authorization: 'Bearer secret-header', cookie: 'latchkey_refresh=secret-cookie' },
    payload: { email: 'nobody@example.com', password: 'secret-login-password' }
  })
  t.equal(res.statusCode, 401)
  t.ok(lines.some(line => line.includes('"reqId"')), 'the request was logged')

  const [all, dead, down] = lines.map(line => JSON.parse(line)).filter(entry => ['everything at once', 'a transaction failed', 'backend unavailable'].includes(entry.msg))
  t.notMatch(lines.join('\n'), /secret-|123456|654321/, 'no secret anywhere in the output')
  t.same(all.body, { email: 'ada@example.com', password: '[redacted]', currentPassword: '[redacted]', newPassword: '[redacted]', refreshToken: '[redacted]', token: '[redacted]', code: '[redacted]' })
  t.same(all.tokens, { accessToken: '[redacted]', refreshToken: '[redacted]', tokenType: 'Bearer' })
  t.same([all.mail.to, all.mail.text, all.mail.html], ['ada@example.com', '[redacted]', '[redacted]'])
  t.equal(dead.err.code, '40P01', "PostgreSQL's code stays readable")
  t.equal(down.err.code, 'ECONNREFUSED', 'and a system error code too')
})
