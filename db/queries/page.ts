import { createHmac, timingSafeEqual } from 'node:crypto'

/** One page of a list, newest first: `nextCursor` continues after its last item, null on the last page. */
export interface Page<T> {
  items: T[]
  nextCursor: string | null
}

/**
 * Opaque keyset cursors: the position of the last item, as JSON, with a MAC
 * so a client can only hand back a cursor it was given. A tampered or foreign
 * cursor decodes to undefined (the route answers 400), never to a query.
 */
export function cursors (key: Buffer) {
  const mac = (payload: string) => createHmac('sha256', key).update(payload).digest().subarray(0, 16)
  return {
    encode (position: Record<string, string>): string {
      const payload = Buffer.from(JSON.stringify(position)).toString('base64url')
      return `${payload}.${mac(payload).toString('base64url')}`
    },
    decode (cursor: string): Record<string, string> | undefined {
      const [payload, tag, extra] = cursor.split('.')
      if (extra !== undefined || !payload || !tag) return undefined
      const given = Buffer.from(tag, 'base64url')
      const expected = mac(payload)
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
      try {
        const position = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
        return typeof position === 'object' && position !== null && !Array.isArray(position) ? position : undefined
      } catch {
        return undefined
      }
    }
  }
}

/** The page of `limit` items out of the `limit + 1` rows a query read: the extra row only says there is more. */
export function pageOf<R, T> (rows: R[], limit: number, view: (row: R) => T, position: (row: R) => Record<string, string>, encode: (p: Record<string, string>) => string): Page<T> {
  const items = rows.slice(0, limit)
  const last = items.at(-1)
  return { items: items.map(view), nextCursor: rows.length > limit && last !== undefined ? encode(position(last)) : null }
}
