import type { Tokens } from './types.js'

/**
 * Where the client keeps its tokens. Read before every request, so two tabs
 * sharing one store (localStorage) see each other's refreshes.
 */
export interface TokenStorage {
  get (): Tokens | null | Promise<Tokens | null>
  set (tokens: Tokens): void | Promise<void>
  clear (): void | Promise<void>
}

/** Tokens in this page's or process's memory only: gone on reload, out of reach of other scripts' storage reads. */
export function memoryStorage (initial: Tokens | null = null): TokenStorage {
  let tokens = initial
  return {
    get: () => tokens,
    set: (next) => { tokens = next },
    clear: () => { tokens = null }
  }
}

/**
 * Tokens in `localStorage` (or any Web Storage) under one key: they survive a
 * reload and are shared by the origin's tabs, and readable by every script
 * of the origin (prefer the cookie transport for the refresh token).
 */
export function localStorageTokens (key = 'latchkey.tokens', store: Storage = globalThis.localStorage): TokenStorage {
  return {
    get () {
      const raw = store.getItem(key)
      if (raw === null) return null
      try {
        const tokens = JSON.parse(raw) as Tokens | null
        return typeof tokens?.accessToken === 'string' ? tokens : null
      } catch {
        // Something else wrote the key: treated as no tokens, not as a crash on every request.
        return null
      }
    },
    set: (tokens) => { store.setItem(key, JSON.stringify(tokens)) },
    clear: () => { store.removeItem(key) }
  }
}
