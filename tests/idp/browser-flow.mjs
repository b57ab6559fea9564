// The broker's web UI driven in headless Chromium, as a person would use it: sign in through the
// IdP's own login page, connect a provider, create a workspace token and use it, see the device
// code page, an error page, the pages on a phone and in dark mode, unlink, sign out.
//
// Run by tests/tests/browser.rs with BROKER_URL, IDP_URL, PROVIDER_ID, PROVIDER_NAME,
// DEVICE_PROVIDER_ID, DEVICE_PROVIDER_NAME, SIGN_IN_TEXT and SCREENSHOT_DIR. Prints one JSON line (what it saw) and
// exits 0, or prints the failed step and exits 1. Never prints a token.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const broker = env('BROKER_URL');
const idp = env('IDP_URL');
const providerId = env('PROVIDER_ID');
const providerName = env('PROVIDER_NAME');
const deviceId = env('DEVICE_PROVIDER_ID');
const deviceName = env('DEVICE_PROVIDER_NAME');
const signInText = env('SIGN_IN_TEXT');
const shots = env('SCREENSHOT_DIR');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const seen = { screenshots: [], steps: [] };
let step = 'start';
const at = (name) => {
  step = name;
  seen.steps.push(name);
};

async function shot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  seen.screenshots.push(file);
}

// A workspace token made through the API with the page's session and CSRF token.
async function apiToken(page, body) {
  return page.evaluate(async (payload) => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const made = await fetch('/api/v2/users/me/workspace-tokens', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(payload),
    });
    return { status: made.status, body: await made.json(), csrf };
  }, body);
}

async function dropToken(page, id, csrf) {
  await page.evaluate(async ([tokenId, token]) => {
    await fetch(`/api/v2/users/me/workspace-tokens/${tokenId}`, {
      method: 'DELETE', credentials: 'same-origin', headers: { 'x-csrf-token': token },
    });
  }, [id, csrf]);
}

// What a screen reader and a keyboard user need from every page: a language, a title, one h1,
// a label for every form field, alt text on every image, a name on every button and link.
async function checkAccessible(page) {
  const problems = await page.evaluate(() => {
    const found = [];
    if (!document.documentElement.lang) found.push('no lang on <html>');
    if (!document.title.trim()) found.push('no <title>');
    if (/[<>]/.test(document.title) || document.title.length > 120) found.push(`a title that is not plain text: ${document.title.slice(0, 80)}`);
    if (document.querySelectorAll('h1').length !== 1) found.push('not exactly one h1');
    for (const img of document.querySelectorAll('img')) {
      if (!img.hasAttribute('alt')) found.push(`img without alt: ${img.src}`);
    }
    for (const field of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
      const labelled = field.labels?.length || field.getAttribute('aria-label') || field.closest('label');
      if (!labelled) found.push(`field without label: ${field.name}`);
    }
    for (const control of document.querySelectorAll('a[href], button')) {
      if (control.hidden || control.closest('[hidden]')) continue;
      const name = (control.getAttribute('aria-label') || control.textContent || '').trim();
      const img = control.querySelector('img[alt]:not([alt=""])');
      if (!name && !img) found.push(`control without a name: ${control.outerHTML.slice(0, 80)}`);
    }
    return found;
  });
  assert.deepEqual(problems, [], `accessibility problems on ${page.url()}`);
}

// Nothing leaves the machine (the IdP's stock pages ask for a web font).
async function loopbackOnly(context) {
  await context.route(
    (url) => url.hostname !== '127.0.0.1',
    (route) => route.abort('blockedbyclient'),
  );
}

// The page fits the viewport: nothing to scroll sideways on a phone.
async function checkNoSidewaysScroll(page) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  assert.ok(scroll <= width, `${page.url()} is ${scroll}px wide in a ${width}px viewport`);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  if (!fs.existsSync(executablePath)) {
    throw new Error(`Chromium is not installed at ${executablePath}: apt-get install chromium (./tests/run does it as root)`);
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
    ],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 }, colorScheme: 'light' });
  context.setDefaultTimeout(15000);
  await loopbackOnly(context);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error' && message.location().url.startsWith(broker)) consoleErrors.push(message.text());
  });

  at('sign-in page');
  await page.goto(`${broker}/`);
  assert.equal(new URL(page.url()).pathname, '/login', 'a signed-out visitor is sent to the sign-in page');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await checkAccessible(page);
  await shot(page, '01-sign-in');

  at('keyboard: the first Tab reaches the skip link');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent?.trim()), 'Skip to content');

  at('IdP login page');
  await page.getByRole('link', { name: `Sign in with ${signInText}` }).click();
  await page.getByLabel('Username').waitFor();
  assert.ok(page.url().startsWith(idp), `the IdP's own page, not ${page.url()}`);
  await shot(page, '02-idp-login');
  await page.getByLabel('Username').fill('alice');
  await page.getByRole('button', { name: 'Sign in' }).click();

  at('home after sign-in');
  await page.waitForURL(`${broker}/`);
  await page.getByRole('heading', { name: 'External authentication' }).waitFor();
  assert.ok(await page.getByRole('navigation', { name: 'Main' }).getByText('alice').isVisible());
  const row = page.locator('li', { hasText: providerName });
  assert.equal((await row.locator('.state').textContent()).trim(), 'Not connected');
  await checkAccessible(page);
  await shot(page, '03-home');

  at('workspace setup page, nothing connected');
  {
    const made = await apiToken(page, { name: 'needs-both', providers: [providerId, deviceId] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await page.goto(`${broker}/workspace-tokens/${made.body.id}`);
    await page.getByRole('heading', { name: 'Workspace “needs-both”', level: 1 }).waitFor();
    assert.equal(await page.locator('#setup-state').getAttribute('data-ready'), 'false');
    assert.equal(await page.getByRole('link', { name: /^Connect / }).count(), 2, 'a Connect button per required provider');
    assert.ok(await page.getByRole('link', { name: `Connect ${providerName}` }).isVisible());
    assert.ok(await page.getByRole('link', { name: `Connect ${deviceName}` }).isVisible());
    await checkAccessible(page);
    await shot(page, '16-workspace-setup');
    await dropToken(page, made.body.id, made.csrf);
    await page.goto(`${broker}/`);
  }

  at('connect the provider');
  await page.getByRole('link', { name: `Connect ${providerName}` }).click();
  await page.waitForURL(`${broker}/external-auth/${providerId}?redirected=true`);
  await page.getByText('Connected.', { exact: true }).waitFor();
  await checkAccessible(page);
  await shot(page, '04-connected');

  at('home shows the link');
  await page.getByRole('link', { name: 'All providers' }).click();
  await page.waitForURL(`${broker}/`);
  assert.match((await row.locator('.state').textContent()).trim(), /^Connected/);
  await shot(page, '05-home-connected');

  at('workspace tokens, empty');
  await page.getByRole('link', { name: 'Workspace tokens' }).click();
  await page.getByRole('heading', { name: 'Workspace tokens', level: 1 }).waitFor();
  await page.getByText('No workspace tokens yet.').waitFor();
  await checkAccessible(page);

  at('create a workspace token');
  await page.getByLabel('Name').fill('browser-test');
  await page.getByRole('button', { name: 'Create token' }).click();
  // The click returns once the answer page starts loading; read it only when it is all there.
  await page.waitForLoadState('load');
  const exports = await page.locator('#exports').textContent();
  const token = exports.match(/EXTAUTH_TOKEN=(\S+)/)?.[1];
  assert.ok(token, 'the created token is shown');
  assert.ok(exports.includes(`EXTAUTH_URL=${broker}`), 'the broker URL is shown with it');
  assert.equal(await page.getByRole('row', { name: /browser-test/ }).count(), 1, 'the token is listed');
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: broker });
  await page.getByRole('button', { name: 'Copy both lines' }).click();
  await page.getByRole('status').filter({ hasText: 'Copied.' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), exports, 'the copy is exactly the two lines');
  // The screenshot shows the shape, not the secret.
  await page.locator('#exports').evaluate((el) => {
    el.textContent = el.textContent.replace(/(EXTAUTH_TOKEN=extauth_ws_[^_]+_)\S+/, '$1…');
  });
  await shot(page, '06-workspace-token');

  at('the workspace token fetches the linked token');
  const lookup = await fetch(`${broker}/api/v2/workspaceagents/me/external-auth?id=${providerId}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(lookup.status, 200);
  const answer = await lookup.json();
  assert.ok(answer.access_token?.length > 10, 'an access token');
  assert.equal(answer.password, '', 'generic type: the token is the username');
  seen.access_token_length = answer.access_token.length;

  at('device code page');
  await page.goto(`${broker}/external-auth/${deviceId}`);
  await page.locator('#user-code').filter({ hasText: /\S/ }).waitFor();
  const userCode = (await page.locator('#user-code').textContent()).trim();
  assert.match(userCode, /^[A-Z]{4}-?[A-Z]{4}$/, 'a user code is shown');
  const verify = page.getByRole('link', { name: /paste the code/ });
  assert.ok((await verify.getAttribute('href')).startsWith(idp), 'the link goes to the provider');
  await checkAccessible(page);
  await shot(page, '07-device-code');

  at('device code completed at the provider in another tab');
  const [idpTab] = await Promise.all([context.waitForEvent('page'), verify.click()]);
  await idpTab.waitForLoadState();
  await idpTab.getByRole('button', { name: 'Continue', exact: true }).click();
  await idpTab.waitForLoadState();
  await page.getByText('Connected.', { exact: true }).waitFor({ timeout: 30000 });
  assert.equal(new URL(page.url()).pathname, `/external-auth/${deviceId}`, 'back on the provider page');
  await page.goto(`${broker}/`);
  assert.match(
    (await page.locator('li', { hasText: deviceName }).locator('.state').textContent()).trim(),
    /^Connected/,
    'the device-flow provider is connected',
  );
  await idpTab.close();

  at('workspace setup page, ready');
  {
    const made = await apiToken(page, { name: 'ready-one', providers: [providerId, deviceId] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await page.goto(`${broker}/workspace-tokens/${made.body.id}`);
    assert.equal(await page.locator('#setup-state').getAttribute('data-ready'), 'true');
    await page.getByText('Every account this workspace requires is connected.').waitFor();
    assert.equal(await page.getByRole('link', { name: /^Connect / }).count(), 0, 'nothing left to connect');
    await checkAccessible(page);
    await shot(page, '17-workspace-ready');
    await dropToken(page, made.body.id, made.csrf);
  }

  at('git SSH key page: copy, then regenerate with confirmation');
  {
    await page.getByRole('link', { name: 'Git SSH key' }).click();
    await page.getByRole('heading', { name: 'Git SSH key', level: 1 }).waitFor();
    const before = (await page.locator('#public-key').textContent()).trim();
    assert.match(before, /^ssh-ed25519 AAAA\S+ extauth:alice$/);
    await page.getByText(/^SHA256:/).waitFor();
    await page.getByRole('button', { name: 'Copy' }).click();
    await page.getByRole('status').filter({ hasText: 'Copied.' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), before, 'the copy is the key');
    await checkAccessible(page);
    await shot(page, '18-git-ssh-key');
    await page.getByLabel('I understand that the old key stops working').check();
    await page.getByRole('button', { name: 'Regenerate the key' }).click();
    await page.getByText('A new key is made.').waitFor();
    const after = (await page.locator('#public-key').textContent()).trim();
    assert.notEqual(after, before, 'a new key replaced the old one');
  }

  at('error page');
  // The two deliberate failures below are logged by the browser as failed loads.
  const errorsBefore = consoleErrors.length;
  const failed = await page.goto(`${broker}/external-auth/${providerId}/callback?error=access_denied&error_description=The+user+denied+access`);
  assert.equal(failed.status(), 400);
  assert.match(failed.headers()['content-type'], /^text\/html/, 'browser routes answer with pages, not JSON');
  await page.getByText('refused the login (access_denied).').waitFor();
  assert.equal(await page.getByText('The user denied access').count(), 0, 'text from the query is never shown');
  assert.ok(await page.getByRole('navigation', { name: 'Main' }).getByText('alice').isVisible(), 'the error page keeps the navigation');
  await checkAccessible(page);
  await shot(page, '08-error');
  const missing = await page.goto(`${broker}/external-auth/no-such-provider`);
  assert.equal(missing.status(), 404);
  assert.match(missing.headers()['content-type'], /^text\/html/);
  consoleErrors.splice(errorsBefore);

  at('register an OAuth2 app');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'OAuth2 apps' }).click();
  await page.getByRole('heading', { name: 'OAuth2 apps', level: 1 }).waitFor();
  await checkAccessible(page);
  const appCallback = `${broker}/healthz`;
  await page.getByLabel('Name', { exact: true }).fill('Team dashboard');
  await page.getByLabel('Redirect URIs (one per line)').fill(appCallback);
  await page.getByRole('checkbox', { name: /external-auth:read/ }).check();
  await page.getByRole('button', { name: 'Register app' }).click();
  await page.waitForLoadState('load');
  const clientSecret = (await page.locator('#secret-heading + p + pre').textContent()).trim();
  assert.match(clientSecret, /^extauth_cs_/, 'the new secret is shown once');
  const clientId = (await page.locator('article.app', { hasText: 'Team dashboard' }).locator('dd code').first().textContent()).trim();
  await page.locator('#secret-heading + p + pre').evaluate((el) => {
    el.textContent = el.textContent.replace(/(extauth_cs_[^_]+_)\S+/, '$1…');
  });
  await shot(page, '13-oauth2-apps');

  at('consent to the app');
  const authorize = new URL(`${broker}/oauth2/authorize`);
  authorize.search = new URLSearchParams({
    client_id: clientId, response_type: 'code', redirect_uri: appCallback, state: 'st-42',
    scope: 'openid profile user:read external-auth:read',
  }).toString();
  await page.goto(authorize.href);
  await page.getByRole('heading', { name: 'Team dashboard wants to use your account' }).waitFor();
  await page.getByText('Use the tokens of your linked accounts').waitFor();
  await checkAccessible(page);
  await shot(page, '14-consent');
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${appCallback}?`));
  const back = new URL(page.url()).searchParams;
  assert.equal(back.get('state'), 'st-42', 'state comes back exactly');
  assert.equal(back.get('iss'), broker, 'the issuer comes back (RFC 9207)');
  const tokenAnswer = await fetch(`${broker}/oauth2/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code: back.get('code'), redirect_uri: appCallback,
      client_id: clientId, client_secret: clientSecret,
    }),
  });
  assert.equal(tokenAnswer.status, 200);
  const appTokens = await tokenAnswer.json();
  const me = await fetch(`${broker}/api/v2/users/me`, { headers: { authorization: `Bearer ${appTokens.access_token}` } });
  assert.equal((await me.json()).username, 'alice', 'the app acts for the user who consented');

  at('connected apps');
  await page.goto(`${broker}/connected-apps`);
  const appRow = page.getByRole('row', { name: /Team dashboard/ });
  await appRow.waitFor();
  await checkAccessible(page);
  await shot(page, '15-connected-apps');
  await page.getByRole('button', { name: 'Disconnect Team dashboard' }).click();
  await page.waitForLoadState('load');
  await page.getByRole('status').filter({ hasText: 'Team dashboard is disconnected' }).waitFor();
  const afterDisconnect = await fetch(`${broker}/api/v2/users/me`, { headers: { authorization: `Bearer ${appTokens.access_token}` } });
  assert.equal(afterDisconnect.status, 401, 'the token of the app ends with the disconnection');
  seen.oauth2 = { client_id: clientId, scope: appTokens.scope };

  at('on a phone');
  const state = await context.storageState();
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, storageState: state,
  });
  await loopbackOnly(phone);
  const phonePage = await phone.newPage();
  for (const route of ['/', '/workspace-tokens']) {
    await phonePage.goto(`${broker}${route}`);
    await checkNoSidewaysScroll(phonePage);
  }
  await phonePage.goto(`${broker}/`);
  await shot(phonePage, '09-home-phone');
  await phone.close();

  at('dark mode');
  const dark = await browser.newContext({ viewport: { width: 1000, height: 720 }, colorScheme: 'dark', storageState: state });
  await loopbackOnly(dark);
  const darkPage = await dark.newPage();
  await darkPage.goto(`${broker}/`);
  const background = await darkPage.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 200, `a dark background in dark mode, not ${background}`);
  await shot(darkPage, '10-home-dark');
  await dark.close();

  at('unlink');
  await page.goto(`${broker}/`);
  await page.getByRole('button', { name: `Unlink ${providerName}` }).click();
  await page.waitForLoadState('load');
  await page.getByRole('status').filter({ hasText: `${providerName} unlinked` }).waitFor();
  assert.equal((await row.locator('.state').textContent()).trim(), 'Not connected');
  await shot(page, '11-unlinked');
  const after = await fetch(`${broker}/api/v2/workspaceagents/me/external-auth?id=${providerId}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const afterAnswer = await after.json();
  assert.ok(afterAnswer.url && !afterAnswer.access_token, 'after unlinking, workspaces get the link URL');

  at('sign out through the IdP');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL((url) => url.href.startsWith(idp));
  await shot(page, '12-idp-sign-out');
  await page.getByRole('button', { name: /sign me out/i }).click();
  await page.waitForURL(`${broker}/login`);
  await page.goto(`${broker}/`);
  assert.equal(new URL(page.url()).pathname, '/login', 'the session has ended');

  assert.deepEqual(consoleErrors, [], 'no errors in the browser console');
  await context.close();
}

main().then(
  () => {
    process.stdout.write(`${JSON.stringify(seen)}\n`);
  },
  (err) => {
    process.stderr.write(`browser flow failed at step "${step}": ${err.stack || err}\n`);
    process.stdout.write(`${JSON.stringify({ ...seen, failed: step })}\n`);
    process.exitCode = 1;
  },
);
