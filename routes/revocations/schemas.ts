import { Type } from '@sinclair/typebox'

const Seq = '^[0-9]{1,15}$'

export const RevocationEvent = Type.Object({
  seq: Type.Integer({ minimum: 1, description: 'Its number: gapless, in commit order; the stream\'s `id:`.' }),
  kind: Type.Union([Type.Literal('user'), Type.Literal('session')], { description: '`user`: every token of the user with a `ver` below `tokenVersion` is dead. `session`: every token with this `sid` is.' }),
  id: Type.String({ format: 'uuid', description: 'The user (`sub`) or the session (`sid`).' }),
  tokenVersion: Type.Optional(Type.Integer({ description: 'kind `user`: the new token_version; tokens with another `ver` are revoked.' })),
  at: Type.String({ format: 'date-time' })
}, { additionalProperties: false, description: 'A revocation: ids, kinds and versions, nothing else about the account.' })

export const FeedQuery = Type.Object({
  after: Type.Optional(Type.String({ pattern: Seq, description: 'The last `seq` already seen; 0 (or absent) for everything kept.' }))
}, { additionalProperties: false })

export const StreamHeaders = Type.Object({
  'last-event-id': Type.Optional(Type.String({ pattern: Seq, description: 'The last `seq` received (EventSource sends it on reconnect); wins over `after`.' }))
})

export const FeedPage = Type.Object({
  events: Type.Array(RevocationEvent, { description: 'At most 500, oldest first.' }),
  last: Type.Integer({ minimum: 0, description: 'The `after` of the next request: the last `seq` listed, or `after` when none is.' }),
  reset: Type.Optional(Type.Literal(true, { description: 'Events after `after` were flushed (they concern expired access tokens only) or `after` is unknown: the list starts at the oldest kept.' }))
}, { additionalProperties: false, description: 'Revocations after `after`.' })
