import { parseArgs } from 'node:util'
import { buildApp } from '../app.js'
import { Email } from '../openapi/components.js'
import { passwordProblem } from '../plugins/app/accounts/passwords.js'
import { runScript, UsageError } from './cli.js'

const usage = 'usage: npm run admin:create -- --email <email> --password <password>'

// `npm run admin:create -- --email … --password …` (SPEC §9): a new admin, its
// email counted as verified, or an existing account promoted. Runs through the
// accounts service like the API, so a promotion ends the account's sessions on
// every running instance and lands in the audit trail.
await runScript('admin:create', async config => {
  let values: { email?: string, password?: string }
  try {
    values = parseArgs({ options: { email: { type: 'string' }, password: { type: 'string' } }, strict: true }).values
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${usage}`)
  }
  const { email, password } = values
  if (email === undefined || password === undefined) throw new UsageError(usage)
  if (email.length > (Email.maxLength as number) || !new RegExp(Email.pattern as string).test(email)) {
    throw new UsageError(`"${email}" is not an email address`)
  }
  // Checked before anything opens, as the service would refuse it.
  const weak = passwordProblem(password, config.PASSWORD_MIN_LENGTH)
  if (weak !== undefined) throw new UsageError(weak)
  const app = await buildApp({ dotenv: true, env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' } })
  try {
    const { outcome, user } = await app.accounts.createAdmin(email, password)
    const said = {
      created: `created admin ${user.email} (${user.id})`,
      promoted: `promoted ${user.email} (${user.id}) to admin; its password is unchanged and its sessions have ended`,
      unchanged: `${user.email} (${user.id}) is already an admin; nothing changed`
    }
    console.log(said[outcome])
  } finally {
    await app.close()
  }
})
