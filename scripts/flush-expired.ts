import { loadConfig } from '../config.js'
import { createDatabase } from '../plugins/infra/db.js'
import { flushExpired } from '../db/retention.js'

const db = createDatabase(loadConfig(process.env, true))
try {
  const { refreshTokens, sessions } = await flushExpired(db)
  console.log(`deleted ${refreshTokens} expired refresh tokens and ${sessions} expired sessions`)
} finally {
  await db.destroy()
}
