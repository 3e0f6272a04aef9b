import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { build, register } from './helper.js'

// SPEC §13: Swagger UI at /docs renders every route under the app's own
// Content-Security-Policy, and its Authorize button sends the bearer token.
// Driven in Debian's Chromium (apt-get install chromium); Playwright's own
// browser builds are never downloaded.
const executablePath = '/usr/bin/chromium'
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
const screenshot = '/tmp/swagger-authorized.png'
const timeout = 15_000

const skip = existsSync(executablePath)
  ? false
  : `Chromium is not installed at ${executablePath} (apt-get install -y chromium)`

/** Debian's Chromium, in a new empty profile that Playwright makes and removes. */
async function launch (t: Test): Promise<Browser> {
  const { chromium } = await import('playwright-core')
  const browser = await chromium.launch({ executablePath, args, headless: true, timeout })
  t.teardown(() => browser.close())
  return browser
}

/** A fresh browser context: nothing that an earlier page persisted (Swagger UI keeps the authorization). */
async function freshContext (t: Test, browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } })
  context.setDefaultTimeout(timeout)
  t.teardown(() => context.close())
  return context
}

/** Opens /docs and waits until Swagger UI has rendered the operations from /docs/json. */
async function openDocs (context: BrowserContext, base: string): Promise<{ page: Page, problems: { errors: string[] } }> {
  const page = await context.newPage()
  const problems = { errors: [] as string[] }
  page.on('console', msg => { if (msg.type() === 'error') problems.errors.push(msg.text()) })
  page.on('pageerror', err => problems.errors.push(`uncaught: ${err.message}`))
  // Every CSP violation, reported or not, as the page itself sees it.
  await page.addInitScript({
    content: `document.addEventListener('securitypolicyviolation', e =>
      console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')))`
  })
  const res = await page.goto(`${base}/docs`)
  if (res === null || res.status() !== 200) throw new Error(`GET /docs: ${res?.status()}`)
  try {
    await page.locator('#operations-profile-getProfile').waitFor()
  } catch (err) {
    throw new Error(`Swagger UI did not render the operations; the page logged: ${JSON.stringify(problems.errors)}`, { cause: err })
  }
  return { page, problems }
}

/** Expands GET /profile, presses "Try it out" and "Execute", and returns the rendered live response. */
async function executeGetProfile (page: Page) {
  const op = page.locator('#operations-profile-getProfile')
  await op.locator('.opblock-summary-control').click()
  await op.getByRole('button', { name: 'Try it out' }).click()
  await op.getByRole('button', { name: 'Execute' }).click()
  const response = op.locator('.live-responses-table .response')
  await response.waitFor()
  return {
    status: (await response.locator('.response-col_status').innerText()).trim(),
    body: await response.locator('.response-col_description pre').first().innerText(),
    curl: await op.locator('.curl-command').innerText()
  }
}

/** Console errors other than the browser's own note that a request answered with the expected status. */
function unexpected (errors: string[], status: number) {
  return errors.filter(e => !e.startsWith(`Failed to load resource: the server responded with a status of ${status}`))
}

t.test('Swagger UI at /docs in a real browser', { skip }, async t => {
  const app = await build(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const account = await register(app)

  const browser = await launch(t)

  await t.test('renders every operation under the CSP; Authorize with the access token, then GET /profile answers 200', async t => {
    const { page, problems } = await openDocs(await freshContext(t, browser), base)
    const rendered = await page.locator('.opblock').count()
    const documented = Object.values((await app.inject('/docs/json')).json().paths as Record<string, object>)
      .reduce((n: number, item) => n + Object.keys(item).length, 0)
    t.equal(rendered, documented, `all ${documented} documented operations are rendered`)
    t.same(problems.errors, [], 'rendered without console errors, CSP violations or uncaught exceptions')

    await page.locator('.auth-wrapper button.authorize').click()
    const dialog = page.locator('.modal-ux')
    const scheme = dialog.locator('.auth-container', { hasText: 'bearerAuth' })
    // Swagger UI labels its controls for assistive technology: the dialog's
    // "Authorize" button is "Apply credentials", its "Logout" is "Remove authorization".
    await scheme.getByRole('textbox', { name: 'auth-bearer-value' }).fill(account.tokens.accessToken)
    await scheme.getByRole('button', { name: 'Apply credentials' }).click()
    await scheme.getByRole('button', { name: 'Remove authorization' }).waitFor()
    // Each scheme (bearerAuth, DPoP, feedToken) has its own Close; any one closes the dialog.
    await dialog.getByRole('button', { name: 'Close' }).first().click()
    await dialog.waitFor({ state: 'detached' })
    t.ok(await page.locator('.auth-wrapper button.authorize.locked').isVisible(), 'the Authorize button shows a closed lock')

    const response = await executeGetProfile(page)
    t.equal(response.status, '200', 'GET /profile answered 200')
    t.match(JSON.parse(response.body), { id: account.id, email: account.email }, 'the response shows the account')
    t.match(response.curl, `Authorization: Bearer ${account.tokens.accessToken}`, 'the bearer token was sent')
    t.same(problems.errors, [], 'no console errors, no CSP violations, no uncaught exceptions')

    await page.locator('#operations-profile-getProfile').scrollIntoViewIfNeeded()
    await page.screenshot({ path: screenshot, fullPage: true })
  })

  await t.test('in a fresh browser profile, without authorizing, GET /profile answers 401', async t => {
    const { page, problems } = await openDocs(await freshContext(t, browser), base)
    t.notOk(await page.locator('.auth-wrapper button.authorize.locked').count(), 'the Authorize button shows an open lock')
    const response = await executeGetProfile(page)
    t.equal(response.status, '401', 'GET /profile answered 401')
    t.match(JSON.parse(response.body), { error: String }, 'the response is the error shape')
    t.notMatch(response.curl, /Authorization/i, 'no Authorization header was sent')
    t.same(unexpected(problems.errors, 401), [], 'no console errors beyond the 401 itself')
  })

  await t.test('errors are documented: real codes, real examples, no "Default Response"; logout\'s body is optional', async t => {
    const { page, problems } = await openDocs(await freshContext(t, browser), base)
    const login = page.locator('#operations-auth-login')
    await login.locator('.opblock-summary-control').click()
    const unauthorized = login.locator('.responses-table tr.response[data-code="401"]')
    await unauthorized.waitFor()
    const described = await unauthorized.locator('.response-col_description').innerText()
    t.match(described, /invalid_credentials/, 'the 401 lists its code')
    t.match(described, /The email or password is incorrect\./, 'and shows the real example')
    t.notMatch(described, /599/, 'no impossible status in the example')
    const tooMany = await login.locator('.responses-table tr.response[data-code="429"] .response-col_description').innerText()
    t.match(tooMany, /rate_limited/)
    t.ok(await login.locator('.opblock-section-request-body .required').count() > 0, 'login\'s body is required')
    const example = await login.locator('.opblock-section-request-body .body-param__example, .opblock-section-request-body pre').first().innerText()
    t.match(example, /ada@example\.com/, 'the request example is one a person would type')

    const logout = page.locator('#operations-auth-logout')
    await logout.locator('.opblock-summary-control').click()
    await logout.locator('.responses-table tr.response[data-code="204"]').waitFor()
    t.equal(await logout.locator('.opblock-section-request-body .required').count(), 0, 'logout\'s body is not marked required')
    t.match(await logout.locator('.responses-table tr.response[data-code="401"] .response-col_description').innerText(), /token_revoked/)

    const text = await page.locator('#swagger-ui').innerText()
    t.notMatch(text, /Default Response/, 'no response is labelled "Default Response"')
    t.same(problems.errors, [], 'no console errors')
  })
})
