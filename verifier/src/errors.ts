/** The codes a verification fails with, from latchkey's closed list (SPEC §12). */
export type VerifierErrorCode =
  | 'token_missing'
  | 'token_invalid'
  | 'token_expired'
  | 'token_revoked'
  | 'token_binding_mismatch'
  | 'dpop_proof_invalid'
  | 'service_unavailable'

const messages: Record<VerifierErrorCode, string> = {
  token_missing: 'No access token was sent.',
  token_invalid: 'The access token is not valid.',
  token_expired: 'The access token has expired.',
  token_revoked: 'The access token has been revoked.',
  token_binding_mismatch: 'The access token is bound to a client this request does not prove.',
  dpop_proof_invalid: 'The DPoP proof is missing, malformed, expired, replayed or does not match the token.',
  service_unavailable: 'The revocation feed cannot be followed right now; try again shortly.'
}

/** Why a token was refused: `code` says which (SPEC §12), `status` what to answer (401, or 503 when the verifier cannot tell). */
export class VerifierError extends Error {
  readonly code: VerifierErrorCode
  readonly status: 401 | 503

  constructor (code: VerifierErrorCode, message = messages[code]) {
    super(message)
    this.name = 'VerifierError'
    this.code = code
    this.status = code === 'service_unavailable' ? 503 : 401
  }
}

export function isVerifierError (err: unknown): err is VerifierError {
  return err instanceof VerifierError
}
