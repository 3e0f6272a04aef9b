import { createDatabase } from '../plugins/infra/db.js'
import { migrateToLatest } from '../db/migrate.js'
import { runScript } from './cli.js'

await runScript('migrate', async config => {
  const db = createDatabase(config)
  try {
    const applied = await migrateToLatest(db)
    console.log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'already up to date')
  } finally {
    await db.destroy()
  }
})
