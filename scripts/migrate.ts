import { loadConfig } from '../config.js'
import { createDatabase } from '../plugins/infra/db.js'
import { migrateToLatest } from '../db/migrate.js'

const db = createDatabase(loadConfig(process.env, true))
try {
  const applied = await migrateToLatest(db)
  console.log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'already up to date')
} finally {
  await db.destroy()
}
