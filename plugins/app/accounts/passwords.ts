import { availableParallelism } from 'node:os'
import fp from 'fastify-plugin'
import { hash, verify } from '@node-rs/argon2'
import { AppError } from '../../infra/errors.js'

// argon2id with the binding's defaults (m=19456 KiB, t=2, p=1): OWASP's minimum.
const algorithm = 2 // Algorithm.Argon2id; the const enum is not importable under isolatedModules

declare module 'fastify' {
  interface FastifyInstance {
    passwords: {
      /** 400 `weak_password` unless the password meets the policy; then its argon2id hash. */
      hash (password: string): Promise<string>
      /** Whether the password matches; with no hash (unknown user) it still spends the same time. */
      verify (hash: string | undefined, password: string): Promise<boolean>
    }
  }
}

/** Why the password does not meet the policy, in a sentence, or undefined when it does. */
export function passwordProblem (password: string, minLength: number): string | undefined {
  // Counted in characters (code points), as the request schema counts them.
  const length = [...password].length
  if (length < minLength || length > 128 || password.trim() === '') return `The password must be ${minLength} to 128 characters long.`
}

/**
 * At most `running` argon2id computations at once (one per core: more only
 * take the event loop's CPU and thrash the caches, each holding 19 MiB), and
 * at most `waiting` queued behind them; past that, 503 at once, so a login
 * flood costs neither unbounded memory nor unbounded latency.
 */
export function hashGate (running: number, waiting: number) {
  let busy = 0
  const queue: Array<() => void> = []
  return async function <T> (work: () => Promise<T>): Promise<T> {
    if (busy < running) {
      busy++
    } else {
      if (queue.length >= waiting) throw new AppError('service_unavailable', { message: 'Too many password checks are waiting; try again shortly.' })
      // The finishing computation hands its place over: busy stays the same.
      await new Promise<void>(resolve => queue.push(resolve))
    }
    try {
      return await work()
    } finally {
      const next = queue.shift()
      if (next) next()
      else busy--
    }
  }
}

export default fp(async (app) => {
  const { PASSWORD_MIN_LENGTH } = app.config
  // Checked against when the user is unknown, so the answer takes as long as a real check.
  const dummy = await hash('latchkey dummy password', { algorithm })
  const gated = hashGate(availableParallelism(), 128)

  app.decorate('passwords', {
    async hash (password: string) {
      const problem = passwordProblem(password, PASSWORD_MIN_LENGTH)
      if (problem !== undefined) throw new AppError('weak_password', { message: problem })
      return gated(() => hash(password, { algorithm }))
    },
    async verify (stored: string | undefined, password: string) {
      const ok = await gated(async () => {
        try {
          return await verify(stored ?? dummy, password)
        } catch (err) {
          app.log.error({ err }, 'stored password hash is unreadable')
          return false
        }
      })
      return ok && stored !== undefined
    }
  })
}, { name: 'passwords', dependencies: ['config'] })
