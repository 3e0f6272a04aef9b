import { loadConfig, ConfigError, type Config } from '../config.js'

/**
 * Runs a command-line script with the validated configuration (and `.env`).
 * A configuration problem, or an embedded database another process holds, is
 * the operator's to fix: printed plainly, without a stack trace, exit 1.
 */
export async function runScript (name: string, main: (config: Config) => Promise<void>): Promise<void> {
  try {
    await main(loadConfig(process.env, true))
  } catch (err) {
    if (!(err instanceof ConfigError) && !(err instanceof UsageError)) throw err
    process.stderr.write(`${name}: ${err.message}\n`)
    process.exitCode = 1
  }
}

/** A mistake in how the script was called (a missing argument, a bad email): told plainly, exit 1. */
export class UsageError extends Error {}
