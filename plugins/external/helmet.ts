import helmet, { type FastifyHelmetOptions } from '@fastify/helmet'

// Swagger UI at /docs runs its own scripts and styles; the API itself serves JSON only.
export const autoConfig: FastifyHelmetOptions = {
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
      // Served over plain HTTP by default (127.0.0.1): upgrading would break /docs.
      upgradeInsecureRequests: null
    }
  }
}

export default helmet
