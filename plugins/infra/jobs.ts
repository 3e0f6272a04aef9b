import fp from 'fastify-plugin'
import { flushExpired, retentionOf } from '../../db/retention.js'

// Expired refresh tokens and sessions, audit events past AUDIT_RETENTION and
// the revocation feed's events past their keeping are deleted every
// FLUSH_EXPIRED_INTERVAL (0 turns it off; `npm run flush-expired` does the
// same on demand).
export default fp(async (app) => {
  const every = app.config.FLUSH_EXPIRED_INTERVAL
  if (every === 0) return
  let running: Promise<void> | undefined
  const timer = setInterval(() => {
    running ??= flushExpired(app.db, retentionOf(app.config))
      .then(counts => app.log.info(counts, 'expired tokens flushed'))
      .catch(err => app.log.warn({ err }, 'flushing expired tokens failed'))
      .finally(() => { running = undefined })
  }, every * 1000)
  timer.unref()
  app.addHook('onClose', async () => {
    clearInterval(timer)
    await running
  })
}, { name: 'jobs', dependencies: ['config', 'db'] })
