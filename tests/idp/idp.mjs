// oidc-provider as the upstream forge and OIDC IdP of extauth's tests.
//
// Configuration comes as JSON in IDP_CONFIG: { clients: [...], accessTokenTtl?, account? }.
// Listens on 127.0.0.1 (a free port) and prints one JSON line {"issuer": "..."} when ready.
// Interactions (login, consent) complete by themselves for the account `account` (default
// "alice"), so an HTTP client walking the redirects links without any UI.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.IDP_CONFIG || '{}');
const defaultAccount = config.account || 'alice';
let accessTokenTtl = config.accessTokenTtl || 3600;
// Who logs in at the next interaction (tests switch it through /test/config).
let account = defaultAccount;

// The signing key, ours so the test controls can sign tokens the way the IdP does.
// A fixed RSA key, made once for these tests (it signs nothing outside them). Loaded rather than
// generated at each start: key generation was the costliest step of starting the IdP, and a
// suspect in rare start-up hangs (main thread asleep on a futex) seen under a loaded test run.
const keyJwk = JSON.parse(fs.readFileSync(new URL('./test-signing-key.jwk.json', import.meta.url), 'utf8'));
const privateKey = crypto.createPrivateKey({ key: keyJwk, format: 'jwk' });
const signingJwk = { ...keyJwk, kid: 'test-key', alg: 'RS256', use: 'sig' };

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

// A JWT signed with the IdP's key (RS256), or with `hs256Secret` (HS256).
function signJwt(payload, hs256Secret) {
  const header = hs256Secret ? { alg: 'HS256', typ: 'JWT' } : { alg: 'RS256', typ: 'JWT', kid: signingJwk.kid };
  const input = `${b64url(header)}.${b64url(payload)}`;
  const signature = hs256Secret
    ? crypto.createHmac('sha256', hs256Secret).update(input).digest('base64url')
    : crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${signature}`;
}

// Claims by account name: `unverified…` accounts have an unverified email, `ops…` accounts are
// in the ops group. Tests can override claims for every account (/test/config `claims`).
let claimOverrides = {};
// GitHub App installations the accounts' tokens reach, by account: { alice: ['acme', 'alice'] }
// (/test/config `installations`), served like GitHub's GET /user/installations.
let installations = config.installations || {};
function claimsOf(id) {
  return {
    sub: id,
    email: `${id}@${config.emailDomain || 'example.com'}`,
    email_verified: !id.startsWith('unverified'),
    name: `${id[0].toUpperCase()}${id.slice(1)} Tester`,
    preferred_username: id,
    groups: id.startsWith('ops') ? ['ops', 'devs'] : ['devs'],
    ...claimOverrides,
  };
}

// The fault layer in front of the provider, driven by the tests through /test/faults:
// path -> { mode: 'status' | 'oauth' | 'slow' | 'hang' | 'reset', status, error, headers,
//           body, delayMs, count (requests left; -1 = until cleared) }.
const faults = new Map();
// What reached the provider (after faults) per path, what a fault caught per path, and grants
// the provider served per grant type.
const counters = { requests: {}, faulted: {}, grants: {} };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  // `publicHost`: the name browsers use for it (tests of split-horizon DNS resolve it themselves).
  const issuer = `http://${config.publicHost || '127.0.0.1'}:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients || [],
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return claimsOf(id);
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    jwks: { keys: [signingJwk] },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      deviceFlow: { enabled: true },
      // For the token-endpoint benchmark against extauth (tests/perf/token-bench.sh).
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    // Like a forge: every client allowed to refresh gets a refresh token, rotated on each use
    // (a rotated one presented again fails with invalid_grant and revokes the grant).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    // A forge's grants outlive the browser session that created them.
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: () => accessTokenTtl,
      AuthorizationCode: 60,
      DeviceCode: 600,
      Grant: 3600,
      Interaction: 600,
      RefreshToken: 86400,
      Session: 3600,
    },
    pkce: { required: () => false },
    cookies: { keys: ['extauth-test-cookie-key'] },
  });
  provider.on('server_error', (ctx, err) => console.error('idp server_error', err));
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    counters.grants[type] = (counters.grants[type] || 0) + 1;
  });
  // Why a grant was refused, on the test's stderr (the answer itself only says invalid_grant).
  provider.on('grant.error', (ctx, err) => console.error(`idp grant.error: ${err.message} (${err.error_detail || ''})`));

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    try {
      if (req.url.startsWith('/test/')) {
        await control(provider, req, res);
        return;
      }
      const path = req.url.split('?')[0];
      if (await applyFault(path, req, res)) return;
      counters.requests[path] = (counters.requests[path] || 0) + 1;
      if (path === '/user/installations') {
        await userInstallations(provider, req, res);
        return;
      }
      const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
      if (match && req.method === 'POST' && match[2]) {
        const form = new URLSearchParams(await readBody(req));
        await provider.interactionFinished(req, res, { login: { accountId: form.get('username') || account } }, {
          mergeWithLastSubmission: false,
        });
        return;
      }
      if (match && req.method === 'GET') {
        await completeInteraction(provider, req, res, match[1]);
        return;
      }
      callback(req, res);
    } catch (err) {
      console.error('idp error', err);
      res.statusCode = 500;
      res.end(String(err));
    }
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// GitHub's GET /user/installations for the bearer token's account: 401 without a live token.
async function userInstallations(provider, req, res) {
  const header = req.headers.authorization || '';
  const token = header.startsWith('Bearer ') ? await provider.AccessToken.find(header.slice(7)) : undefined;
  if (!token || token.isExpired) {
    json(res, 401, { message: 'Bad credentials' });
    return;
  }
  const owners = installations[token.accountId] || [];
  json(res, 200, {
    total_count: owners.length,
    installations: owners.map((login, i) => ({ id: i + 1, account: { login, type: 'Organization' }, repository_selection: 'all' })),
  });
}

async function readBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function control(provider, req, res) {
  const path = req.url.split('?')[0];
  if (path === '/test/access-token/destroy' && req.method === 'POST') {
    await destroyAccessToken(provider, req, res);
  } else if (path === '/test/faults' && req.method === 'POST') {
    const fault = JSON.parse(await readBody(req));
    faults.set(fault.path, { count: -1, ...fault });
    json(res, 200, { ok: true });
  } else if (path === '/test/faults' && req.method === 'DELETE') {
    faults.clear();
    json(res, 200, { ok: true });
  } else if (path === '/test/counters') {
    json(res, 200, counters);
  } else if (path === '/test/config' && req.method === 'POST') {
    const update = JSON.parse(await readBody(req));
    if (update.accessTokenTtl) accessTokenTtl = update.accessTokenTtl;
    if (update.account) account = update.account;
    if (update.claims) claimOverrides = update.claims;
    if (update.installations) installations = update.installations;
    json(res, 200, { accessTokenTtl, account });
  } else if (path === '/test/logout-token' && req.method === 'POST') {
    // A back-channel logout token as the IdP would send it (OpenID Back-Channel Logout 1.0 §2.4).
    const { aud, sub, sid, hs256Secret } = JSON.parse(await readBody(req));
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: provider.issuer, aud, iat: now, exp: now + 120, jti: crypto.randomUUID(),
      events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
      ...(sub ? { sub } : {}), ...(sid ? { sid } : {}),
    };
    json(res, 200, { logout_token: signJwt(payload, hs256Secret) });
  } else {
    json(res, 404, { error: 'unknown test control' });
  }
}

// Applies the fault for `path`, if any; true when the request was answered (or dropped) here.
async function applyFault(path, req, res) {
  const fault = faults.get(path);
  if (!fault || fault.count === 0) return false;
  if (fault.count > 0) fault.count -= 1;
  counters.faulted[path] = (counters.faulted[path] || 0) + 1;
  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  switch (fault.mode) {
    case 'slow':
      // Late, then served for real: the provider does the work the client may have given up on.
      await sleep(fault.delayMs || 1000);
      return false;
    case 'hang':
      // Never answered: the connection is dropped after the delay, nothing was processed.
      await sleep(fault.delayMs || 5000);
      req.socket.destroy();
      return true;
    case 'reset':
      req.socket.destroy();
      return true;
    case 'id_token':
      // The token answer is served for real, then its ID token is rewritten with `claims` and
      // signed again (with the IdP's key, or HS256 with `hs256Secret`).
      rewriteIdToken(res, fault.claims || {}, fault.hs256Secret);
      return false;
    case 'add_fields':
      // The token answer is served for real, with `fields` added (e.g. GitHub's
      // refresh_token_expires_in, which oidc-provider does not send).
      addFields(res, fault.fields || {});
      return false;
    case 'oauth':
      json(res, fault.status || 400, { error: fault.error || 'invalid_grant', error_description: 'injected by the test' });
      return true;
    default:
      res.writeHead(fault.status || 500, { 'content-type': 'application/json', ...(fault.headers || {}) });
      res.end(fault.body || '{"message":"injected by the test"}');
      return true;
  }
}

function addFields(res, fields) {
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) => (name.toLowerCase() === 'content-length' ? res : setHeader(name, value));
  const end = res.end.bind(res);
  res.end = (body, ...rest) => {
    try {
      return end(JSON.stringify({ ...JSON.parse(body.toString()), ...fields }), ...rest);
    } catch {
      return end(body, ...rest);
    }
  };
}

function rewriteIdToken(res, overrides, hs256Secret) {
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) => (name.toLowerCase() === 'content-length' ? res : setHeader(name, value));
  const end = res.end.bind(res);
  res.end = (body, ...rest) => {
    try {
      const answer = JSON.parse(body.toString());
      if (answer.id_token) {
        const payload = JSON.parse(Buffer.from(answer.id_token.split('.')[1], 'base64url').toString());
        const claims = { ...payload, ...overrides };
        // `at_hash: "computed"`: the right value for the access token sent with it (RS256/HS256).
        if (claims.at_hash === 'computed') {
          const digest = crypto.createHash('sha256').update(answer.access_token).digest();
          claims.at_hash = digest.subarray(0, 16).toString('base64url');
        }
        answer.id_token = signJwt(claims, hs256Secret);
      }
      return end(JSON.stringify(answer), ...rest);
    } catch {
      return end(body, ...rest);
    }
  };
}

// Test control: the forge stops accepting one access token while its grant and refresh token
// live on (as when a provider invalidates a leaked token). Revocation (RFC 7009) would also end
// the refresh token.
async function destroyAccessToken(provider, req, res) {
  const body = await readBody(req);
  const token = new URLSearchParams(body).get('token');
  const found = token && await provider.AccessToken.find(token);
  if (found) await found.destroy();
  res.statusCode = found ? 204 : 404;
  res.end();
}

async function completeInteraction(provider, req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login' && config.interactiveLogin) {
    // A login page a browser test fills in, as a person would at the IdP.
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test IdP sign-in</title>
<style>body{font:16px system-ui;margin:3rem auto;max-width:22rem}input,button{font:inherit;padding:.4rem;width:100%;margin:.3rem 0}</style></head>
<body><h1>Test IdP</h1><p>Signing in to ${params.client_id}</p>
<form method="post" action="/interaction/${uid}/login"><label for="username">Username</label>
<input id="username" name="username" autofocus required><button type="submit">Sign in</button></form></body></html>`);
    return;
  }
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: account } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  const accountId = session.accountId;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  const missing = prompt.details || {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, {
    mergeWithLastSubmission: true,
  });
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
