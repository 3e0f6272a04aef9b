import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { build } from '../helper.js'
import { jwks, pair } from '../plugins/app/tokens/fixtures.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

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
