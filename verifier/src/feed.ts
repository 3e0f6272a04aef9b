import { setTimeout as sleep } from 'node:timers/promises'

/** One revocation as latchkey's feed lists it (SPEC §14.1). */
export interface RevocationEvent {
  /** Its place in commit order: consecutive, never reused. */
  seq: number
  /** `user`: every token of user `id` with `ver` below `tokenVersion` is dead; `session`: every token with `sid` = `id`. */
  kind: 'user' | 'session'
  id: string
  tokenVersion?: number
  /** When it was recorded. */
  at: string
}

export interface FeedHandlers {
  revocation (event: RevocationEvent): void
  /** latchkey no longer keeps events back to the resume point; what it dropped concerned expired tokens only. */
  reset (): void
  connected (): void
  disconnected (error: Error): void
}

// latchkey sends a heartbeat every 15 s: three missed ones mean a dead connection, however quiet TCP stays.
const silenceLimit = 45_000
const firstRetry = 50
const longestRetry = 2_000

function isEvent (value: unknown): value is RevocationEvent {
  const e = value as RevocationEvent
  return typeof e === 'object' && e !== null && Number.isSafeInteger(e.seq) && e.seq > 0 && typeof e.id === 'string' &&
    (e.kind === 'session' || (e.kind === 'user' && Number.isSafeInteger(e.tokenVersion)))
}

/**
 * Follows `GET /revocations/stream`: each (re)connection first reads what it
 * missed from `GET /revocations?after=<last seq>`, then streams from there
 * with `Last-Event-ID`, so no event is lost across a drop and none is applied
 * twice.
 */
export function followFeed (options: { streamUrl: URL, token: string, fetch: typeof fetch, on: FeedHandlers }) {
  const { streamUrl, on } = options
  const listUrl = new URL(streamUrl.href.replace(/\/stream\/?(?=$|\?)/, ''))
  const authorization = `Bearer ${options.token}`
  const stopped = new AbortController()
  let last = 0
  let connected = false
  let heardAt = 0
  let downSince = 0
  let current: AbortController | undefined

  function apply (value: unknown): void {
    if (!isEvent(value)) throw new Error('the feed sent an event that is not a revocation')
    if (value.seq <= last) return
    last = value.seq
    on.revocation(value)
  }

  async function catchUp (signal: AbortSignal): Promise<void> {
    for (;;) {
      const url = new URL(listUrl)
      url.searchParams.set('after', String(last))
      const response = await options.fetch(url, { headers: { authorization, accept: 'application/json' }, signal })
      if (response.status !== 200) throw new Error(`the feed answered ${response.status}`)
      const body = await response.json() as { events?: unknown, last?: unknown, reset?: unknown }
      if (!Array.isArray(body.events)) throw new Error('the feed answered without an events list')
      if (body.reset === true) on.reset()
      // Pages run to an empty one: a full page says nothing about what follows.
      if (body.events.length === 0) return
      for (const event of body.events) apply(event)
    }
  }

  /** Server-Sent Events (WHATWG HTML §9.2), the fields latchkey sends: id, event, data and comments. */
  async function read (body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder()
    let buffer = ''
    let type = ''
    let data: string[] = []
    const reader = body.getReader()
    for (;;) {
      const { done, value: chunk } = await reader.read()
      if (done) return
      heardAt = Date.now()
      buffer += decoder.decode(chunk, { stream: true })
      const lines = buffer.split(/\r\n|\r|\n/)
      buffer = lines.pop() as string
      for (const line of lines) {
        if (line === '') {
          if (type === 'revocation' && data.length > 0) apply(JSON.parse(data.join('\n')))
          else if (type === 'reset') on.reset()
          type = ''
          data = []
          continue
        }
        if (line.startsWith(':')) continue
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'event') type = value
        else if (field === 'data') data.push(value)
      }
    }
  }

  async function connectOnce (): Promise<void> {
    const attempt = new AbortController()
    current = attempt
    const signal = AbortSignal.any([attempt.signal, stopped.signal])
    await catchUp(signal)
    const response = await options.fetch(streamUrl, {
      headers: { authorization, accept: 'text/event-stream', 'last-event-id': String(last) },
      signal
    })
    if (response.status !== 200 || response.body === null) throw new Error(`the feed stream answered ${response.status}`)
    connected = true
    heardAt = Date.now()
    on.connected()
    await read(response.body)
    throw new Error('the feed closed the stream')
  }

  // A connection that stays open but says nothing is as good as dropped.
  const watchdog = setInterval(() => {
    if (connected && Date.now() - heardAt > silenceLimit) current?.abort(new Error('the feed went silent'))
  }, 5_000)
  watchdog.unref()

  async function run (): Promise<void> {
    let retry = firstRetry
    while (!stopped.signal.aborted) {
      try {
        await connectOnce()
      } catch (err) {
        if (stopped.signal.aborted) break
        const silent = connected && Date.now() - heardAt > silenceLimit
        if (connected) {
          connected = false
          downSince = silent ? heardAt : Date.now()
          retry = firstRetry
        }
        on.disconnected(err instanceof Error ? err : new Error(String(err)))
      }
      await sleep(retry, undefined, { signal: stopped.signal }).catch(() => {})
      retry = Math.min(retry * 2, longestRetry)
    }
  }
  const running = run()

  return {
    /** The highest `seq` applied. */
    get last () { return last },
    get connected () { return connected },
    /** While not connected: since when (ms since the epoch) the stream has been down; 0 when it was never up. */
    get downSince () { return downSince },
    async close (): Promise<void> {
      clearInterval(watchdog)
      stopped.abort()
      await running
    }
  }
}
