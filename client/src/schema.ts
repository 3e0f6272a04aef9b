// Generated from openapi/openapi.json by `npm run openapi` (openapi-typescript): do not edit.

export interface paths {
    "/admin/audit-events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The audit trail, newest first
         * @description Every security-relevant event (SPEC §9.1), optionally of one user or one type.
         */
        get: operations["listAuditEvents"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/admin/users": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * List users, newest first
         * @description Keyset pagination: pass the `nextCursor` of a page as `cursor` for the next one.
         */
        get: operations["listUsers"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/admin/users/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        /**
         * Change a user's role or disable them: their tokens die at once
         * @description A role change or disabling ends every session of the user and refuses their tokens at once, on every instance. An admin cannot demote or disable itself (400 `validation_failed`).
         */
        patch: operations["updateUser"];
        trace?: never;
    };
    "/auth/register": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Create an account; opens a session and mails an email-verification code */
        post: operations["register"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/login": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Log in with email and password; opens a session */
        post: operations["login"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/refresh": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Exchange a refresh token for a new access token (and, with rotation, a new refresh token)
         * @description Failures answer 400 (RFC 6749 invalid_grant): the client sends the user to log in. In cookie transport a refused refresh cookie is cleared.
         */
        post: operations["refresh"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/logout": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * End this session, every other session, or every session of the user
         * @description Authenticated by the Bearer access token, or by `refreshToken` in the body when the access token is gone (in cookie transport, by the refresh cookie, which a logout of this session clears).
         */
        post: operations["logout"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/email/verify": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Confirm the email address with the code mailed to it
         * @description Takes effect at once, on access tokens already issued too. A wrong, expired, used or replaced code, or an unknown email, all answer 400 `otp_invalid`.
         */
        post: operations["verifyEmail"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/email/resend": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Mail a new email-verification code
         * @description Always 202 with the same body, so it does not reveal whether an account exists. Nothing is sent for verified accounts, or within OTP_RESEND_COOLDOWN of the previous code.
         */
        post: operations["resendEmailCode"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/password/forgot": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Mail a password reset code
         * @description Always 202 with the same body, so it does not reveal whether an account exists.
         */
        post: operations["forgotPassword"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/password/reset": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Set a new password with a mailed reset code; every session ends
         * @description Every access and refresh token of the account dies at once. The code proves the mailbox, so the email counts as verified afterwards. Any problem with the code answers 400 `otp_invalid`.
         */
        post: operations["resetPassword"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/password/change": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Change the password; every other session ends and this one gets a fresh token pair
         * @description A wrong current password answers 400 `invalid_credentials` (not 401: the token is fine). Every earlier token of the account dies, the caller's too: use the pair in the reply.
         */
        post: operations["changePassword"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/auth/token/verify": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Check an access or refresh token: signature, claims and revocation state */
        post: operations["verifyToken"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Liveness: the process answers */
        get: operations["getHealth"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/profile": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's profile */
        get: operations["getProfile"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        /**
         * Change the caller's name
         * @description For accounts whose email is verified; `null` clears the name.
         */
        patch: operations["updateProfile"];
        trace?: never;
    };
    "/profile/activity": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The caller's own security events, newest first
         * @description Logins (successful and failed), password changes, sessions ended, reuse detected…: "was that me?". Why a login failed is not shown here.
         */
        get: operations["listProfileActivity"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/ready": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Readiness: the database is reachable (a lost cache is reported, not fatal)
         * @description Without the cache (Redis) the service keeps working on the database (SPEC §15), so it stays 200 with `status: "degraded"`: a load balancer must not take every instance out because the cache died.
         */
        get: operations["getReady"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/revocations": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Revocations after a number: token-version bumps and ended sessions */
        get: operations["listRevocations"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/revocations/stream": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Every revocation as it commits, as Server-Sent Events
         * @description Each event: `id: <seq>`, `event: revocation`, `data: <the event as JSON>`. Resumes after `Last-Event-ID` (or `after`); `event: reset` first when the resume point is older than what is kept; a `: heartbeat` comment every 15 s.
         */
        get: operations["streamRevocations"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/sessions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's active sessions, the current one marked */
        get: operations["listSessions"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/sessions/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /** Revoke one of the caller's sessions: its tokens die at once */
        delete: operations["revokeSession"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/.well-known/jwks.json": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The public keys that verify latchkey's tokens: the current, the next and the previous ones
         * @description Empty under an HMAC algorithm. Keys are published before they sign and stay until what they signed has expired, so a copy cached for its max-age never misses a key.
         */
        get: operations["getJwks"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        Error: {
            /**
             * @description The HTTP status, repeated.
             * @example 400
             */
            statusCode: number;
            /** @description A code from the closed list of SPEC §12. */
            code: "validation_failed" | "invalid_credentials" | "email_taken" | "weak_password" | "token_missing" | "token_invalid" | "token_expired" | "token_revoked" | "token_binding_mismatch" | "dpop_proof_invalid" | "refresh_reused" | "otp_invalid" | "email_not_verified" | "forbidden" | "not_found" | "device_limit_reached" | "account_disabled" | "rate_limited" | "payload_too_large" | "unsupported_media_type" | "request_timeout" | "uri_too_long" | "headers_too_large" | "service_unavailable" | "internal_error";
            /** @description The HTTP reason phrase. */
            error: string;
            /** @description A sentence for people. */
            message: string;
        };
        /**
         * @description An email address; stored trimmed and lower-cased.
         * @example ada@example.com
         */
        Email: string;
        /** @description PASSWORD_MIN_LENGTH (default 8) to 128 characters. */
        Password: string;
        /** @description 1 to 100 characters, no control characters. */
        Label: string;
        /** @description A user account. */
        User: {
            /** Format: uuid */
            id: string;
            email: string;
            name: string | null;
            role: "user" | "admin";
            emailVerified: boolean;
            /** Format: date-time */
            createdAt: string;
        };
        Tokens: {
            accessToken: string;
            /** @description Absent when refresh rotation is off, and in cookie transport (`X-Token-Transport: cookie`), where it is the `__Host-latchkey-refresh` cookie. */
            refreshToken?: string;
            /** @description `DPoP` when the session is bound to the DPoP key of the proof sent (SPEC §8.1): send the access token as `Authorization: DPoP <token>` with a proof by that key. */
            tokenType: "Bearer" | "DPoP";
            /** @description Seconds until the access token expires. */
            expiresIn: number;
            /** @description Seconds until the refresh token expires. */
            refreshExpiresIn?: number;
        };
        /** @description A user account, as admins see it. */
        AdminUser: {
            /** Format: uuid */
            id: string;
            email: string;
            name: string | null;
            role: "user" | "admin";
            emailVerified: boolean;
            /** Format: date-time */
            createdAt: string;
            /** @description Disabled accounts cannot log in, and their tokens are refused. */
            disabled: boolean;
            /**
             * Format: date-time
             * @description The last successful login; null if never.
             */
            lastLoginAt: string | null;
        };
        /** @description A security-relevant event (SPEC §9.1). */
        AuditEvent: {
            /**
             * @description Increasing with the order events were recorded in.
             * @example 42
             */
            id: string;
            /**
             * @description One of the event types of SPEC §9.1, such as `login.failed` or `logout`.
             * @example login.succeeded
             */
            type: string;
            /** Format: date-time */
            at: string;
            /** Format: uuid */
            userId: string | null;
            /** Format: uuid */
            sessionId: string | null;
            ip: string | null;
            userAgent: string | null;
            /** @description Small facts about the event (a logout scope, a count of sessions ended); never a secret. */
            detail: {
                [key: string]: unknown;
            };
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    listAuditEvents: {
        parameters: {
            query: {
                /** @description Items per page, 1 to 100. */
                limit: number;
                /** @description The `nextCursor` of the previous page; opaque. */
                cursor?: string;
                userId?: string;
                type?: "user.registered" | "login.succeeded" | "login.failed" | "login.device_limit_refused" | "refresh.reuse_detected" | "logout" | "session.revoked" | "session.evicted" | "session.binding_mismatch" | "email.verified" | "password.changed" | "password.reset" | "user.role_changed" | "user.disabled" | "user.enabled" | "otp.locked";
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of events, newest first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        items: components["schemas"]["AuditEvent"][];
                        /** @description Pass as `cursor` for the next page; null on the last page. */
                        nextCursor: string | null;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Forbidden, with `code`:
             *     - `forbidden`: You are not allowed to do this.
             */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 403,
                     *       "code": "forbidden",
                     *       "error": "Forbidden",
                     *       "message": "You are not allowed to do this."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    listUsers: {
        parameters: {
            query: {
                /** @description Items per page, 1 to 100. */
                limit: number;
                /** @description The `nextCursor` of the previous page; opaque. */
                cursor?: string;
                /** @description Only emails starting with this, case-insensitive. */
                email?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of users, newest first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        items: components["schemas"]["AdminUser"][];
                        /** @description Pass as `cursor` for the next page; null on the last page. */
                        nextCursor: string | null;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Forbidden, with `code`:
             *     - `forbidden`: You are not allowed to do this.
             */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 403,
                     *       "code": "forbidden",
                     *       "error": "Forbidden",
                     *       "message": "You are not allowed to do this."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    updateUser: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "disabled": true
                 *     }
                 */
                "application/json": {
                    role?: "user" | "admin";
                    disabled?: boolean;
                };
            };
        };
        responses: {
            /** @description A user account, as admins see it. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AdminUser"];
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Forbidden, with `code`:
             *     - `forbidden`: You are not allowed to do this.
             */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 403,
                     *       "code": "forbidden",
                     *       "error": "Forbidden",
                     *       "message": "You are not allowed to do this."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Not Found, with `code`:
             *     - `not_found`: Not found.
             */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 404,
                     *       "code": "not_found",
                     *       "error": "Not Found",
                     *       "message": "Not found."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    register: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
                /** @description With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence). */
                "x-token-transport"?: "cookie";
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com",
                 *       "password": "correct horse battery staple",
                 *       "name": "Ada Lovelace"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                    password: components["schemas"]["Password"];
                    name?: components["schemas"]["Label"];
                };
            };
        };
        responses: {
            /** @description The account and the token pair of its new session. */
            201: {
                headers: {
                    /** @description In cookie transport: `__Host-latchkey-refresh=<refresh token>; Max-Age=<its remaining lifetime>; Path=/; HttpOnly; Secure; SameSite=Strict`. */
                    "set-cookie"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        user: components["schemas"]["User"];
                        tokens: components["schemas"]["Tokens"];
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `weak_password`: The password does not meet the password policy.
             *     - `validation_failed`: The request is not valid.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "weak_password",
                     *       "error": "Bad Request",
                     *       "message": "The password does not meet the password policy."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Conflict, with `code`:
             *     - `email_taken`: An account with this email already exists.
             *     - `device_limit_reached`: The limit of signed-in devices has been reached.
             */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 409,
                     *       "code": "email_taken",
                     *       "error": "Conflict",
                     *       "message": "An account with this email already exists."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    login: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
                /** @description With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence). */
                "x-token-transport"?: "cookie";
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com",
                 *       "password": "correct horse battery staple",
                 *       "deviceName": "Ada's laptop"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                    password: components["schemas"]["Password"];
                    deviceName?: components["schemas"]["Label"];
                };
            };
        };
        responses: {
            /** @description The account and the token pair of its new session. */
            200: {
                headers: {
                    /** @description In cookie transport: `__Host-latchkey-refresh=<refresh token>; Max-Age=<its remaining lifetime>; Path=/; HttpOnly; Secure; SameSite=Strict`. */
                    "set-cookie"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        user: components["schemas"]["User"];
                        tokens: components["schemas"]["Tokens"];
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `invalid_credentials`: The email or password is incorrect.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "invalid_credentials",
                     *       "error": "Unauthorized",
                     *       "message": "The email or password is incorrect."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Conflict, with `code`:
             *     - `device_limit_reached`: The limit of signed-in devices has been reached.
             */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 409,
                     *       "code": "device_limit_reached",
                     *       "error": "Conflict",
                     *       "message": "The limit of signed-in devices has been reached."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    refresh: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
                /** @description With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence). */
                "x-token-transport"?: "cookie";
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "refreshToken": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl"
                 *     }
                 */
                "application/json": {
                    /** @description Required, unless the request sends `X-Token-Transport: cookie` and the refresh cookie (then send `{}`). */
                    refreshToken?: string;
                };
            };
        };
        responses: {
            /** @description The new token pair (the same one again within REFRESH_REUSE_INTERVAL). */
            200: {
                headers: {
                    /** @description In cookie transport: `__Host-latchkey-refresh=<refresh token>; Max-Age=<its remaining lifetime>; Path=/; HttpOnly; Secure; SameSite=Strict`. */
                    "set-cookie"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        tokens: components["schemas"]["Tokens"];
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `token_expired`: The token has expired.
             *     - `token_invalid`: The token is invalid.
             *     - `token_revoked`: The token has been revoked.
             *     - `refresh_reused`: The refresh token was already used; the session has been ended.
             *     - `account_disabled`: The account is disabled.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "token_expired",
                     *       "error": "Bad Request",
                     *       "message": "The token has expired."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    logout: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
                /** @description With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence). */
                "x-token-transport"?: "cookie";
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: {
            content: {
                /**
                 * @example {
                 *       "scope": "global"
                 *     }
                 */
                "application/json": {
                    /** @description Authenticates the logout when the access token is gone (in cookie transport, the refresh cookie does). */
                    refreshToken?: string;
                    /**
                     * @description `global`: every device; `local`: this session; `others`: every session but this one.
                     * @default global
                     */
                    scope?: "global" | "local" | "others";
                };
            };
        };
        responses: {
            /** @description Logged out. */
            204: {
                headers: {
                    /** @description In cookie transport, unless `scope` is `others`: the refresh cookie, expired. */
                    "set-cookie"?: string;
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    verifyEmail: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com",
                 *       "code": "042917"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                    /**
                     * @description The 6-digit code from the email.
                     * @example 042917
                     */
                    code: string;
                };
            };
        };
        responses: {
            /** @description The email address is confirmed. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @enum {boolean} */
                        emailVerified: true;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `otp_invalid`: The code is invalid or has expired
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "otp_invalid",
                     *       "error": "Bad Request",
                     *       "message": "The code is invalid or has expired"
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    resendEmailCode: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                };
            };
        };
        responses: {
            /** @description Accepted; a mail goes out if the account needs one. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @description A sentence for people; it never says whether the account exists. */
                        message: string;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    forgotPassword: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                };
            };
        };
        responses: {
            /** @description Accepted; a mail goes out if the account needs one. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @description A sentence for people; it never says whether the account exists. */
                        message: string;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    resetPassword: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "email": "ada@example.com",
                 *       "code": "042917",
                 *       "newPassword": "staple battery horse correct"
                 *     }
                 */
                "application/json": {
                    email: components["schemas"]["Email"];
                    /**
                     * @description The 6-digit code from the email.
                     * @example 042917
                     */
                    code: string;
                    newPassword: components["schemas"]["Password"];
                };
            };
        };
        responses: {
            /** @description The password is changed; every session has ended. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description Bad Request, with `code`:
             *     - `otp_invalid`: The code is invalid or has expired
             *     - `weak_password`: The password does not meet the password policy.
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "otp_invalid",
                     *       "error": "Bad Request",
                     *       "message": "The code is invalid or has expired"
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    changePassword: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
                /** @description With REFRESH_COOKIE=on: the refresh token travels as the `__Host-latchkey-refresh` cookie, never in the body; refresh and logout read the cookie only when this header is sent (the CSRF defence). */
                "x-token-transport"?: "cookie";
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "currentPassword": "correct horse battery staple",
                 *       "newPassword": "staple battery horse correct"
                 *     }
                 */
                "application/json": {
                    currentPassword: components["schemas"]["Password"];
                    newPassword: components["schemas"]["Password"];
                };
            };
        };
        responses: {
            /** @description The password is changed; the new token pair of this session. */
            200: {
                headers: {
                    /** @description In cookie transport: `__Host-latchkey-refresh=<refresh token>; Max-Age=<its remaining lifetime>; Path=/; HttpOnly; Secure; SameSite=Strict`. */
                    "set-cookie"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        tokens: components["schemas"]["Tokens"];
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `invalid_credentials`: The email or password is incorrect.
             *     - `weak_password`: The password does not meet the password policy.
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "invalid_credentials",
                     *       "error": "Bad Request",
                     *       "message": "The email or password is incorrect."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Forbidden, with `code`:
             *     - `email_not_verified`: Verify your email address first.
             */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 403,
                     *       "code": "email_not_verified",
                     *       "error": "Forbidden",
                     *       "message": "Verify your email address first."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    verifyToken: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl"
                 *     }
                 */
                "application/json": {
                    token: string;
                };
            };
        };
        responses: {
            /** @description The token is valid and not revoked. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @enum {boolean} */
                        valid: true;
                        type: "access" | "refresh";
                        /** Format: uuid */
                        sub: string;
                        /** Format: uuid */
                        sid: string;
                        /** @description Expiry, in seconds since the epoch. */
                        exp: number;
                        /** @description Bound to a device and/or IP (TOKEN_BINDING); reported, not enforced here. */
                        bound: boolean;
                        /** @description For a DPoP-bound token (SPEC §8.1): the key it is bound to; reported, not enforced here. */
                        cnf?: {
                            /** @description The RFC 7638 thumbprint of the DPoP key. */
                            jkt: string;
                        };
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_invalid",
                     *       "error": "Unauthorized",
                     *       "message": "The token is invalid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    getHealth: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The process answers. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @enum {string} */
                        status: "ok";
                    };
                };
            };
        };
    };
    getProfile: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A user account. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["User"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    updateProfile: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "name": "Ada Lovelace"
                 *     }
                 */
                "application/json": {
                    name: components["schemas"]["Label"] | (never | null);
                };
            };
        };
        responses: {
            /** @description A user account. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["User"];
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Forbidden, with `code`:
             *     - `email_not_verified`: Verify your email address first.
             */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 403,
                     *       "code": "email_not_verified",
                     *       "error": "Forbidden",
                     *       "message": "Verify your email address first."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    listProfileActivity: {
        parameters: {
            query: {
                /** @description Items per page, 1 to 100. */
                limit: number;
                /** @description The `nextCursor` of the previous page; opaque. */
                cursor?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of the caller's events, newest first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        items: components["schemas"]["AuditEvent"][];
                        /** @description Pass as `cursor` for the next page; null on the last page. */
                        nextCursor: string | null;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    getReady: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Ready; `degraded` while the cache cannot be reached. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        status: "ok" | "degraded";
                        /** @enum {string} */
                        database: "ok";
                        cache: "ok" | "unreachable";
                    };
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    listRevocations: {
        parameters: {
            query?: {
                /** @description The last `seq` already seen; 0 (or absent) for everything kept. */
                after?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Revocations after `after`. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        /** @description At most 500, oldest first. */
                        events: {
                            /** @description Its number: gapless, in commit order; the stream's `id:`. */
                            seq: number;
                            /** @description `user`: every token of the user with a `ver` below `tokenVersion` is dead. `session`: every token with this `sid` is. */
                            kind: "user" | "session";
                            /**
                             * Format: uuid
                             * @description The user (`sub`) or the session (`sid`).
                             */
                            id: string;
                            /** @description kind `user`: the new token_version; tokens with another `ver` are revoked. */
                            tokenVersion?: number;
                            /** Format: date-time */
                            at: string;
                        }[];
                        /** @description The `after` of the next request: the last `seq` listed, or `after` when none is. */
                        last: number;
                        /**
                         * @description Events after `after` were flushed (they concern expired access tokens only) or `after` is unknown: the list starts at the oldest kept.
                         * @enum {boolean}
                         */
                        reset?: true;
                    };
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Not Found, with `code`:
             *     - `not_found`: Not found.
             */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 404,
                     *       "code": "not_found",
                     *       "error": "Not Found",
                     *       "message": "Not found."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    streamRevocations: {
        parameters: {
            query?: {
                /** @description The last `seq` already seen; 0 (or absent) for everything kept. */
                after?: string;
            };
            header?: {
                /** @description The last `seq` received (EventSource sends it on reconnect); wins over `after`. */
                "last-event-id"?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The stream (text/event-stream); it does not end by itself. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/event-stream": string;
                };
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Not Found, with `code`:
             *     - `not_found`: Not found.
             */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 404,
                     *       "code": "not_found",
                     *       "error": "Not Found",
                     *       "message": "Not found."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    listSessions: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The active sessions, newest first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        sessions: {
                            /**
                             * Format: uuid
                             * @description The tokens' `sid`.
                             */
                            id: string;
                            deviceName: string | null;
                            ip: string | null;
                            userAgent: string | null;
                            /** Format: date-time */
                            createdAt: string;
                            /** Format: date-time */
                            lastSeenAt: string;
                            /**
                             * Format: date-time
                             * @description When the session ends unless refreshed before: its idle timeout, its refresh token or its maximum lifetime.
                             */
                            expiresAt: string;
                            /** @description The session of the token making this request. */
                            current: boolean;
                        }[];
                    };
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    revokeSession: {
        parameters: {
            query?: never;
            header?: {
                /** @description A DPoP proof JWT (RFC 9449 §4): `typ: "dpop+jwt"`, ES256, EdDSA or RS256, the public `jwk`; claims `jti`, `htm`, `htu`, `iat`, and `ath` (the base64url SHA-256 of the access token) on protected routes. */
                dpop?: string;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Revoked. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description Bad Request, with `code`:
             *     - `validation_failed`: The request is not valid.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 400,
                     *       "code": "validation_failed",
                     *       "error": "Bad Request",
                     *       "message": "The request is not valid."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Unauthorized, with `code`:
             *     - `token_missing`: An access token is required.
             *     - `token_invalid`: The token is invalid.
             *     - `token_expired`: The token has expired.
             *     - `token_revoked`: The token has been revoked.
             *     - `token_binding_mismatch`: The token was issued to another device.
             *     - `dpop_proof_invalid`: The DPoP proof is missing or invalid.
             *     - `account_disabled`: The account is disabled.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 401,
                     *       "code": "token_missing",
                     *       "error": "Unauthorized",
                     *       "message": "An access token is required."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Not Found, with `code`:
             *     - `not_found`: Not found.
             */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 404,
                     *       "code": "not_found",
                     *       "error": "Not Found",
                     *       "message": "Not found."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
            /**
             * @description Service Unavailable, with `code`:
             *     - `service_unavailable`: The service is unavailable; try again shortly.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 503,
                     *       "code": "service_unavailable",
                     *       "error": "Service Unavailable",
                     *       "message": "The service is unavailable; try again shortly."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    getJwks: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The JSON Web Key Set. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        keys: {
                            kty: "RSA" | "EC" | "OKP";
                            kid: string;
                            alg: "RS256" | "ES256" | "EdDSA";
                            /** @enum {string} */
                            use: "sig";
                            /** @description EC and OKP keys: P-256 or Ed25519 */
                            crv?: string;
                            /** @description RSA modulus */
                            n?: string;
                            /** @description RSA exponent */
                            e?: string;
                            x?: string;
                            y?: string;
                        }[];
                    };
                };
            };
            /**
             * @description Too Many Requests, with `code`:
             *     - `rate_limited`: Too many requests; try again later.
             */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "statusCode": 429,
                     *       "code": "rate_limited",
                     *       "error": "Too Many Requests",
                     *       "message": "Too many requests; try again later."
                     *     }
                     */
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
}
