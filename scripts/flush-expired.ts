import { loadConfig } from '../plugins/app/config.js'
import { createDatabase } from '../plugins/app/db.js'
import { flushExpired } from '../db/flush-expired.js'

const db = createDatabase(loadConfig(process.env, true))
try {
  const { refreshTokens, sessions } = await flushExpired(db)
  console.log(`deleted ${refreshTokens} expired refresh tokens and ${sessions} expired sessions`)
} finally {
  await db.destroy()
}
