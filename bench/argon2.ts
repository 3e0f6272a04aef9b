// The login and register baselines: raw argon2id with the service's
// parameters and as many in flight as the load keeps, in a process of its own
// (beside the idle service), so its memory is never counted as the service's.
import { performance } from 'node:perf_hooks'
import { hash, verify } from '@node-rs/argon2'

const [kind, inFlight, seconds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])]
const password = 'benchmark password 1234'
const stored = await hash(password, { algorithm: 2 })
let done = 0
const end = performance.now() + seconds * 1000
await Promise.all(Array.from({ length: inFlight }, async () => {
  while (performance.now() < end) {
    await (kind === 'hash' ? hash(password, { algorithm: 2 }) : verify(stored, password))
    done++
  }
}))
process.send?.(done / seconds, () => process.disconnect())
