import { createDatabase } from '../plugins/infra/db.js'
import { flushExpired } from '../db/retention.js'
import { runScript } from './cli.js'

await runScript('flush-expired', async config => {
  const db = createDatabase(config)
  try {
    const { refreshTokens, sessions, auditEvents } = await flushExpired(db, { auditRetention: config.AUDIT_RETENTION })
    console.log(`deleted ${refreshTokens} expired refresh tokens, ${sessions} expired sessions and ${auditEvents} audit events older than AUDIT_RETENTION`)
  } finally {
    await db.destroy()
  }
})
