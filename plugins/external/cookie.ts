import cookie from '@fastify/cookie'

// Parses the Cookie header and sets cookies: the refresh cookie of SPEC §6.1 (plugins/app/sessions/refresh-cookie.ts).
export default cookie
