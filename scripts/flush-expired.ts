import { createDatabase } from '../plugins/infra/db.js'
import { flushExpired, retentionOf } from '../db/retention.js'
import { runScript } from './cli.js'

await runScript('flush-expired', async config => {
  const db = createDatabase(config)
  try {
    const { refreshTokens, sessions, auditEvents, revocations } = await flushExpired(db, retentionOf(config))
    console.log(`deleted ${refreshTokens} expired refresh tokens, ${sessions} expired sessions, ${auditEvents} audit events older than AUDIT_RETENTION and ${revocations} old revocation events`)
  } finally {
    await db.destroy()
  }
})
