import t from 'tap'
import { hashGate } from '../../../../plugins/app/accounts/passwords.js'
import { AppError } from '../../../../plugins/infra/errors.js'

// Work that finishes when the test says so, recording when it began.
function controllable (started: string[]) {
  const finish = new Map<string, () => void>()
  const work = (name: string) => () => new Promise<string>(resolve => {
    started.push(name)
    finish.set(name, () => resolve(name))
  })
  const end = async (name: string) => {
    finish.get(name)?.()
    // Lets the gate hand the place over before the test looks again.
    await new Promise(resolve => setImmediate(resolve))
  }
  return { work, end }
}

t.test('the hash gate runs at most `running` at once, queues in order, and refuses past `waiting`', async t => {
  const gated = hashGate(2, 2)
  const started: string[] = []
  const { work, end } = controllable(started)

  const results = ['a', 'b', 'c', 'd'].map(name => gated(work(name)))
  await new Promise(resolve => setImmediate(resolve))
  t.same(started, ['a', 'b'], 'two run, two wait')

  const refused = await gated(work('e')).catch((err: unknown) => err)
  t.ok(refused instanceof AppError, 'a fifth is refused at once')
  t.equal((refused as AppError).code, 'service_unavailable')
  t.equal((refused as AppError).statusCode, 503)
  t.notOk(started.includes('e'), 'the refused work never ran')

  await end('b')
  t.same(started, ['a', 'b', 'c'], 'a finished computation hands its place to the first waiting')
  await end('a')
  t.same(started, ['a', 'b', 'c', 'd'])
  await end('c')
  await end('d')
  t.same(await Promise.all(results), ['a', 'b', 'c', 'd'], 'every admitted caller gets its own result')

  // Drained: the places are free again, and a failure frees its place too.
  const failing = gated(async () => { throw new Error('unreadable') })
  await t.rejects(failing, { message: 'unreadable' })
  const after: string[] = []
  const again = controllable(after)
  const two = [gated(again.work('f')), gated(again.work('g'))]
  await new Promise(resolve => setImmediate(resolve))
  t.same(after, ['f', 'g'], 'both places are free after the queue drained and a failure')
  await again.end('f')
  await again.end('g')
  await Promise.all(two)
})
