import { readFileSync } from 'node:fs'

/**
 * The node flags a package.json script starts the service with: the bench and
 * the tests of the server start it as `npm start` / `npm run start:prod` do,
 * package.json being the flags' one home (`--import tsx` is not one of them).
 */
export function nodeFlags (script: 'start' | 'start:prod'): string[] {
  const { scripts } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  return scripts[script].split(/\s+/).filter(word => word.startsWith('--') && word !== '--import')
}
