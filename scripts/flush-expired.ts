import { loadConfig } from '../config.js'
import { createDatabase } from '../plugins/infra/db.js'
import { flushExpired, revocationsKeptFor } from '../db/retention.js'

const config = loadConfig(process.env, true)
const db = createDatabase(config)
try {
  const { refreshTokens, sessions, revocations } = await flushExpired(db, undefined, new Date(Date.now() - revocationsKeptFor(config) * 1000))
  console.log(`deleted ${refreshTokens} expired refresh tokens, ${sessions} expired sessions and ${revocations} old revocation events`)
} finally {
  await db.destroy()
}
