import createClient, { type Client } from 'openapi-fetch'
import type { paths } from './schema.js'
import type { ErrorCode, LoginInput, LogoutScope, RegisterInput, Tokens, User } from './types.js'
import { LatchkeyError, errorFrom } from './errors.js'
import { memoryStorage, type TokenStorage } from './storage.js'
import { proofMaker } from './dpop.js'

export type { components, operations, paths } from './schema.js'
export type { ErrorBody, ErrorCode, LoginInput, LogoutScope, RegisterInput, Tokens, User } from './types.js'
export { LatchkeyError, isLatchkeyError } from './errors.js'
export { localStorageTokens, memoryStorage, type TokenStorage } from './storage.js'

export interface LatchkeyOptions {
  /** Where latchkey answers, e.g. `https://auth.example.com`. */
  baseUrl: string
  /** Where the tokens are kept; in memory by default. */
  storage?: TokenStorage
  /**
   * `body` (default): the refresh token comes in the reply and lives in `storage`.
   * `cookie`: it lives in latchkey's HttpOnly cookie, out of reach of scripts
   * (SPEC §6.1; the server runs with REFRESH_COOKIE=on).
   */
  transport?: 'body' | 'cookie'
  /**
   * A DPoP key pair (RFC 9449, SPEC §8.1) from WebCrypto — ECDSA P-256, Ed25519
   * or RSASSA-PKCS1-v1_5 with SHA-256; a non-extractable private key is best.
   * Register, login and refresh send a proof by it, which binds the session;
   * every call then sends `Authorization: DPoP <token>` with a fresh proof.
   */
  dpopKey?: CryptoKeyPair
  /** The fetch to send requests with; `globalThis.fetch` by default. */
  fetch?: (request: Request) => Promise<Response>
  /** Called once when the session is over (a refresh answered 400): the tokens are cleared; send the user to log in. */
  onLoggedOut?: (code: ErrorCode) => void
}

export interface Latchkey {
  /** The typed openapi-fetch client: the access token attached, refreshed once on a 401 and the request retried once. */
  api: Client<paths>
  register (input: RegisterInput): Promise<{ user: User, tokens: Tokens }>
  login (input: LoginInput): Promise<{ user: User, tokens: Tokens }>
  /** Ends this session (`local`), every other one (`others`) or all of the user's (`global`, the default). */
  logout (scope?: LogoutScope): Promise<void>
  /** Renews the access token now; joins a refresh already under way. */
  refresh (): Promise<Tokens>
  /** The tokens held now, or null when logged out. */
  tokens (): Promise<Tokens | null>
}

// The codes of a 401 that a fresh access token can cure.
const renewable = new Set<string>(['token_expired', 'token_revoked'])

/** The client of SPEC §13.1. */
export function createLatchkey (options: LatchkeyOptions): Latchkey {
  const storage = options.storage ?? memoryStorage()
  const cookie = options.transport === 'cookie'
  const baseUrl = options.baseUrl.replace(/\/+$/, '')
  // Looked up per call, not captured: a page may wrap fetch later; and called unbound, as browsers require.
  const send = options.fetch ?? ((request: Request) => globalThis.fetch(request))
  // In cookie transport the browser must store and send latchkey's cookie.
  const credentials: RequestCredentials | undefined = cookie ? 'include' : undefined
  const transportHeaders: Record<string, string> = cookie ? { 'x-token-transport': 'cookie' } : {}
  const makeProof = options.dpopKey && proofMaker(options.dpopKey)
  /** The headers of an auth call: the transport's, and a fresh proof of this call when created with a DPoP key. */
  const authHeaders = async (path: string, accessToken?: string): Promise<Record<string, string>> => ({
    ...transportHeaders,
    ...(makeProof && { dpop: await makeProof('POST', baseUrl + path, accessToken) })
  })

  // The auth calls go through a client of their own: no token attached, never retried.
  const plain = createClient<paths>({ baseUrl, fetch: send, credentials })

  async function keep (tokens: Tokens): Promise<Tokens> {
    // Without rotation a refresh brings no new refresh token: the old one stays valid and is kept.
    const previous = tokens.refreshToken === undefined ? await storage.get() : null
    const next = previous?.refreshToken === undefined
      ? tokens
      : { ...tokens, refreshToken: previous.refreshToken, refreshExpiresIn: previous.refreshExpiresIn }
    await storage.set(next)
    return next
  }

  async function rotate (): Promise<Tokens> {
    const held = await storage.get()
    if (!cookie && held?.refreshToken === undefined) throw new LatchkeyError('token_missing', 401, 'Not logged in.')
    const { data, error, response } = await plain.POST('/auth/refresh', {
      body: cookie ? {} : { refreshToken: held?.refreshToken },
      headers: await authHeaders('/auth/refresh')
    })
    if (data) return await keep(data.tokens)
    const failure = errorFrom(response, error)
    // 400 is RFC 6749's invalid_grant: this session is over. Anything else
    // (rate limited, unavailable) may pass, and the tokens are kept.
    if (response.status === 400) {
      await storage.clear()
      options.onLoggedOut?.(failure.code)
    }
    throw failure
  }

  // Single flight: every caller while a refresh runs waits for that one.
  let inflight: Promise<Tokens> | undefined
  function once (run: () => Promise<Tokens>): Promise<Tokens> {
    inflight ??= run().finally(() => { inflight = undefined })
    return inflight
  }

  /** Fresh tokens for a request refused with `stale`: another request's refresh if one happened meanwhile, else a new one. */
  function renewedAfter (stale: string | undefined): Promise<Tokens> {
    return once(async () => {
      const held = await storage.get()
      if (held !== null && held.accessToken !== stale) return held
      return await rotate()
    })
  }

  async function curable (response: Response, sent: string | undefined): Promise<boolean> {
    if (response.status !== 401) return false
    const body = await response.clone().json().catch(() => null) as { code?: string } | null
    if (body?.code !== undefined && renewable.has(body.code)) return true
    // After a reload in cookie transport no access token is held yet, but the cookie may renew one.
    return cookie && sent === undefined && body?.code === 'token_missing'
  }

  async function withToken (request: Request, tokens: Tokens | null | undefined): Promise<Request> {
    const headers = new Headers(request.headers)
    if (tokens) {
      // A DPoP-bound token goes with a proof of this very request (every retry makes a new one).
      if (tokens.tokenType === 'DPoP' && makeProof) {
        headers.set('authorization', `DPoP ${tokens.accessToken}`)
        headers.set('dpop', await makeProof(request.method, request.url, tokens.accessToken))
      } else {
        headers.set('authorization', `Bearer ${tokens.accessToken}`)
      }
    }
    // A password change answers with the session's new pair: in cookie transport its refresh token comes as the cookie.
    if (cookie && changesPassword(request)) headers.set('x-token-transport', 'cookie')
    return new Request(request, { headers })
  }

  const changesPassword = (request: Request) => request.method === 'POST' && new URL(request.url).pathname.endsWith('/auth/password/change')

  async function authorizedFetch (request: Request): Promise<Response> {
    // Kept unread for the one retry: the first attempt consumes the body.
    const retry = request.clone()
    const held = await storage.get()
    const sent = held?.accessToken
    let response = await send(await withToken(request, held))
    if (await curable(response, sent)) {
      let fresh: Tokens
      try {
        fresh = await renewedAfter(sent)
      } catch (err) {
        // The refresh failed: the caller gets the original 401 (and onLoggedOut has run when the session is over).
        if (err instanceof LatchkeyError) return response
        throw err
      }
      response = await send(await withToken(retry, fresh))
    }
    // Every earlier token of the account died with the password change: the reply's pair replaces them.
    if (response.ok && changesPassword(request)) {
      const body = await response.clone().json() as { tokens: Tokens }
      await keep(body.tokens)
    }
    return response
  }

  const api = createClient<paths>({ baseUrl, fetch: authorizedFetch, credentials })

  async function opened (result: { data?: { user: User, tokens: Tokens }, error?: unknown, response: Response }) {
    if (!result.data) throw errorFrom(result.response, result.error)
    await storage.set(result.data.tokens)
    return result.data
  }

  return {
    api,
    register: async (input) => await opened(await plain.POST('/auth/register', { body: input, headers: await authHeaders('/auth/register') })),
    login: async (input) => await opened(await plain.POST('/auth/login', { body: input, headers: await authHeaders('/auth/login') })),
    refresh: () => once(rotate),
    tokens: async () => await storage.get(),
    async logout (scope = 'global') {
      const held = await storage.get()
      const { error, response } = await plain.POST('/auth/logout', {
        // The refresh token authenticates the logout when the access token has expired.
        body: { scope, ...(!cookie && held?.refreshToken !== undefined && { refreshToken: held.refreshToken }) },
        headers: held?.tokenType === 'DPoP' && makeProof
          ? { ...await authHeaders('/auth/logout', held.accessToken), authorization: `DPoP ${held.accessToken}` }
          : { ...transportHeaders, ...(held !== null && { authorization: `Bearer ${held.accessToken}` }) }
      })
      // 400 or 401: the tokens were dead already, which is what a logout wants.
      if (!response.ok && response.status !== 400 && response.status !== 401) throw errorFrom(response, error)
      if (scope !== 'others' || !response.ok) await storage.clear()
    }
  }
}
