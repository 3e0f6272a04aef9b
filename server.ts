import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'

const app = await buildApp({ dotenv: true })

// In-flight requests finish, then the pool, Redis and SMTP close; a second
// signal or 10 s without progress ends the process anyway.
closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

await app.listen({ host: app.config.HOST, port: app.config.PORT })
