import { on } from 'node:events'
import type { EventEmitter } from 'node:events'

/** Resolves with the first `name` event whose arguments pass `accept` (every one by default). Never a sleep: the event itself. */
export async function waitFor<T extends unknown[]> (emitter: EventEmitter, name: string, accept: (...args: T) => boolean = () => true): Promise<T> {
  for await (const args of on(emitter, name)) {
    if (accept(...args as T)) return args as T
  }
  throw new Error(`${name}: the emitter closed`)
}
