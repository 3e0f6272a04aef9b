import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { errors } from '../../openapi/components.js'
import { AppError } from '../../plugins/infra/errors.js'
import { accessToken } from '../../plugins/app/sessions/authenticate.js'
import type { RevocationEvent as Event } from '../../db/queries/revocations.js'
import { FeedPage, FeedQuery, StreamHeaders } from './schemas.js'

// Comment lines that keep proxies and the verifier's staleness clock from counting an idle stream as dead.
const heartbeatMs = 15_000

const digest = (token: string) => createHash('sha256').update(token).digest()
const wire = (event: Event) => ({ ...event, at: event.at.toISOString() })
const feedFailures = errors({ 401: ['token_missing', 'token_invalid'], 404: ['not_found'], 429: ['rate_limited'], 503: ['service_unavailable'] })

/**
 * The revocation feed (SPEC §14.1), for services that verify access tokens
 * themselves: behind REVOCATION_FEED_TOKEN, and absent (404) without it.
 */
const route: FastifyPluginAsyncTypebox = async (app) => {
  const expected = app.config.REVOCATION_FEED_TOKEN === undefined ? undefined : digest(app.config.REVOCATION_FEED_TOKEN)

  app.addHook('onRequest', async (request) => {
    // The same answer as for any route that does not exist.
    if (expected === undefined) throw new AppError('not_found', { message: `Route ${request.method} ${request.url.split('?')[0]} not found.` })
    const sent = accessToken(request)
    // The feed token is a Bearer secret: a DPoP scheme here is no feed token.
    const token = sent?.scheme === 'bearer' ? sent.token : undefined
    if (sent !== undefined && token === undefined) throw new AppError('token_invalid', { message: 'The feed token is sent as "Bearer <token>".' })
    if (token === undefined) throw new AppError('token_missing', { message: 'The revocation feed needs its token (REVOCATION_FEED_TOKEN).' })
    // Digests of equal length, compared in constant time: the token's length is no oracle either.
    if (!timingSafeEqual(digest(token), expected)) throw new AppError('token_invalid', { message: 'The feed token is not the one configured.' })
  })

  app.get('/', {
    schema: {
      tags: ['revocations'],
      summary: 'Revocations after a number: token-version bumps and ended sessions',
      operationId: 'listRevocations',
      security: [{ feedToken: [] }],
      querystring: FeedQuery,
      response: { 200: FeedPage, ...errors({ 400: ['validation_failed'] }), ...feedFailures }
    }
  }, async (request) => {
    const page = await app.revocations.list(Number(request.query.after ?? 0))
    return { ...page, events: page.events.map(wire) }
  })

  app.get('/stream', {
    schema: {
      tags: ['revocations'],
      summary: 'Every revocation as it commits, as Server-Sent Events',
      description: 'Each event: `id: <seq>`, `event: revocation`, `data: <the event as JSON>`. Resumes after `Last-Event-ID` (or `after`); ' +
        '`event: reset` first when the resume point is older than what is kept; a `: heartbeat` comment every 15 s.',
      operationId: 'streamRevocations',
      security: [{ feedToken: [] }],
      querystring: FeedQuery,
      headers: StreamHeaders,
      response: {
        200: { description: 'The stream (text/event-stream); it does not end by itself.', content: { 'text/event-stream': { schema: Type.String() } } },
        ...errors({ 400: ['validation_failed'] }),
        ...feedFailures
      }
    }
  }, async (request, reply) => {
    const after = Number(request.headers['last-event-id'] ?? request.query.after ?? 0)
    const res = reply.raw
    reply.hijack()
    // The headers set so far (the request id, CORS) go out with the stream's own.
    res.writeHead(200, {
      ...reply.getHeaders() as Record<string, string | number | string[]>,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // Proxies (nginx) pass events on as they come instead of buffering them.
      'x-accel-buffering': 'no'
    })
    // The heartbeats keep it alive; the server's idle timeout is for requests.
    request.raw.socket.setTimeout(0)
    const stop = new AbortController()
    res.once('close', () => stop.abort())
    // What the socket has not taken yet is waited for: a subscriber that does
    // not read holds its cursor, never a growing buffer.
    const write = async (chunk: string) => {
      if (res.write(chunk) || stop.signal.aborted) return
      await new Promise<void>(resolve => {
        const done = () => {
          res.off('drain', done)
          stop.signal.removeEventListener('abort', done)
          resolve()
        }
        res.on('drain', done)
        stop.signal.addEventListener('abort', done)
      })
    }
    const heartbeat = setInterval(() => { if (!res.writableNeedDrain) res.write(': heartbeat\n\n') }, heartbeatMs)
    try {
      // Sent at once, so the subscriber knows it is connected before any event.
      await write(': connected\n\n')
      for await (const page of app.revocations.follow(after, stop.signal)) {
        let chunk = page.reset ? 'event: reset\ndata: {}\n\n' : ''
        for (const event of page.events) chunk += `id: ${event.seq}\nevent: revocation\ndata: ${JSON.stringify(wire(event))}\n\n`
        await write(chunk)
      }
    } catch (err) {
      request.log.warn({ err }, 'revocation stream failed')
    } finally {
      clearInterval(heartbeat)
      res.end()
    }
  })
}

export default route
