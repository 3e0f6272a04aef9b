import t from 'tap'
import { startServer } from './server-process.js'

// A configuration mistake, as an operator meets it: `npm start` exits and says what to fix.

t.test('configuration mistakes: exit non-zero, every problem named with its accepted form, no stack trace', async t => {
  const cases: Array<[string, Record<string, string | undefined>, RegExp[]]> = [
    ['a duration with a unit it does not know', { ACCESS_TOKEN_TTL: '5min' },
      [/ACCESS_TOKEN_TTL: a number of seconds, or a number with s, m, h or d \(got "5min"\)/]],
    ['a short secret', { JWT_SECRET: 'short' }, [/JWT_SECRET: at least 32 characters/]],
    ['a URL of the wrong kind', { DATABASE_URL: 'mysql://root:hunter2@127.0.0.1/latchkey' }, [/DATABASE_URL: a URL starting with postgres:\/\/ or postgresql:\/\//]],
    ['production without DATABASE_URL (a typo)', {
      NODE_ENV: 'production', JWT_SECRET: 'a'.repeat(32), SMTP_URL: 'smtp://127.0.0.1:2525', DATABASE_URL: undefined, DATABSE_URL: 'postgres://x/y'
    }, [/DATABASE_URL: required when NODE_ENV=production/]],
    ['two mistakes at once', { ACCESS_TOKEN_TTL: '5min', PORT: 'eighty' },
      [/ACCESS_TOKEN_TTL: a number of seconds/, /PORT: a whole number from 0 to 65535 \(got "eighty"\)/, /2 problems/]]
  ]
  await Promise.all(cases.map(async ([name, env, expected]) => {
    const server = await startServer(t, env)
    const { code } = await server.exited
    const output = server.output()
    t.not(code, 0, `${name}: non-zero exit`)
    for (const pattern of expected) t.match(output, pattern, `${name}: ${pattern}`)
    t.notMatch(output, /^\s+at /m, `${name}: no stack trace`)
    t.notMatch(output, /hunter2/, `${name}: no password echoed`)
    t.notMatch(output, /Server listening/, `${name}: nothing started`)
  }))
})

t.test('NODE_ENV=production without JWT_SECRET: the server refuses to start and names JWT_SECRET', async t => {
  const server = await startServer(t, { NODE_ENV: 'production', JWT_SECRET: undefined })
  const { code } = await server.exited
  t.not(code, 0, 'non-zero exit')
  t.match(server.output(), /JWT_SECRET/)
  t.notMatch(server.output(), /Server listening/)
})

t.test('a wrong value: the server refuses to start and names the variable', async t => {
  const server = await startServer(t, { ACCESS_TOKEN_TTL: '5x' })
  const { code } = await server.exited
  t.not(code, 0, 'non-zero exit')
  t.match(server.output(), /ACCESS_TOKEN_TTL/)
})
