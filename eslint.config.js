import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', '.tap/**', 'coverage/**', '.data/**', 'client/dist/**', 'verifier/dist/**', 'client/src/schema.ts'] }),
  {
    // What the authenticate hook reads is written only by the accounts and
    // sessions services, which drop the cached state after commit (STYLE.md,
    // "Who writes what"): routes read, never write these tables.
    files: ['routes/**'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{
          group: ['**/db/queries/users.js', '**/db/queries/sessions.js', '**/db/queries/refresh-tokens.js'],
          importNames: [
            'insertUser', 'bumpTokenVersion', 'touchLogin', 'lockUser', 'markEmailVerified', 'setPasswordHash', 'updateProfile', 'setDisabled',
            'insertSession', 'lockSession', 'lockOpenSessions', 'revokeSessions', 'touchSession',
            'insertRefreshToken', 'markRotated', 'revokeSessionRefreshTokens'
          ],
          message: 'Routes do not write auth state: call app.accounts or app.sessions, which invalidate the cache after commit.'
        }]
      }]
    }
  }
]
