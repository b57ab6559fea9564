// openid-client (a certified relying party library) as a third-party app against extauth's
// authorization server: discovery, code + PKCE with the ID token's signature checked, userinfo,
// refresh with rotation and replay refused, introspection, revocation, client credentials, a
// public client on a loopback redirect of another port, and an access token verified offline
// by a resource server with jose (the JWKS, RFC 9068 `at+jwt`).
//
// Input (environment): BROKER_URL, SESSION_COOKIE (a signed-in user's browser), CLIENT_ID,
// CLIENT_SECRET, CALLBACK (registered for the confidential app), PUBLIC_CLIENT_ID,
// PUBLIC_CALLBACK (registered for the public app: http://127.0.0.1:<port>/callback),
// EXPECTED_ALG (the signing algorithm, default ES256).
// Output: one JSON line of what was seen; exit status 1 with the failing step otherwise.
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import * as jose from 'jose';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const broker = env('BROKER_URL');
const cookie = env('SESSION_COOKIE');
const seen = { steps: [] };
let step = 'start';
const at = (name) => {
  step = name;
  seen.steps.push(name);
};
const insecure = { execute: [client.allowInsecureRequests] };

// The user's browser: follows the authorization URL with the session, answers the consent page
// with Allow, and returns where the broker sends it back (the app's callback).
async function browser(authorizationUrl) {
  let response = await fetch(authorizationUrl, { headers: { cookie }, redirect: 'manual' });
  if (response.status === 200) {
    const page = await response.text();
    assert.match(page, /wants to use your account/);
    const form = new URLSearchParams();
    for (const [, name, value] of page.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
      form.set(name, value.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)))
        .replace(/&#x([0-9a-f]+);/gi, (_, n) => String.fromCharCode(parseInt(n, 16)))
        .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&'));
    }
    form.set('decision', 'allow');
    response = await fetch(`${broker}/oauth2/authorize`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
      redirect: 'manual',
    });
  }
  assert.equal(response.status, 302, `the authorization endpoint redirects (got ${response.status})`);
  return new URL(response.headers.get('location'));
}

async function main() {
  at('discovery');
  const config = await client.discovery(new URL(broker), env('CLIENT_ID'), env('CLIENT_SECRET'), undefined, insecure);
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, broker);
  assert.ok(meta.code_challenge_methods_supported.includes('S256'));
  // Check the ID token's signature against the JWKS too (not only TLS trust).
  client.enableNonRepudiationChecks(config);

  at('authorization code with PKCE');
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: env('CALLBACK'),
    scope: 'openid profile email offline_access user:read',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const callback = await browser(url);
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  assert.equal(claims.iss, broker);
  assert.equal(claims.aud, env('CLIENT_ID'));
  assert.equal(claims.preferred_username, 'admin');
  seen.id_token_sub = claims.sub;

  at('userinfo');
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.equal(info.preferred_username, 'admin');

  at('a resource server verifies the access token offline');
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer: broker,
    audience: broker,
    typ: 'at+jwt',
  });
  assert.equal(protectedHeader.alg, process.env.EXPECTED_ALG || 'ES256');
  assert.equal(payload.client_id, env('CLIENT_ID'));
  assert.equal(payload.sub, claims.sub);
  seen.access_scope = payload.scope;

  at('refresh rotates');
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  assert.ok(refreshed.claims(), 'a new ID token');

  at('introspection');
  const active = await client.tokenIntrospection(config, refreshed.access_token);
  assert.equal(active.active, true);
  assert.equal(active.client_id, env('CLIENT_ID'));

  at('revocation');
  await client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' });
  const after = await client.tokenIntrospection(config, refreshed.access_token);
  assert.equal(after.active, false, 'revoking the refresh token ends its access tokens');
  await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token), (e) => e.error === 'invalid_grant');

  at('a replayed refresh token is refused');
  await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token), (e) => e.error === 'invalid_grant');

  at('client credentials');
  const service = await client.clientCredentialsGrant(config, { scope: 'user:read' });
  assert.equal(service.scope, 'user:read');
  const serviceInfo = await client.tokenIntrospection(config, service.access_token);
  assert.equal(serviceInfo.sub, `app:${env('CLIENT_ID')}`);

  at('a public client on a loopback redirect of another port');
  const publicConfig = await client.discovery(new URL(broker), env('PUBLIC_CLIENT_ID'), undefined, client.None(), insecure);
  const registered = new URL(env('PUBLIC_CALLBACK'));
  const loopback = new URL(registered);
  loopback.port = String(Number(registered.port) + 1);
  const publicVerifier = client.randomPKCECodeVerifier();
  const publicState = client.randomState();
  const publicUrl = client.buildAuthorizationUrl(publicConfig, {
    redirect_uri: loopback.href,
    scope: 'openid user:read',
    code_challenge: await client.calculatePKCECodeChallenge(publicVerifier),
    code_challenge_method: 'S256',
    state: publicState,
  });
  const publicCallback = await browser(publicUrl);
  assert.equal(publicCallback.port, loopback.port);
  const publicTokens = await client.authorizationCodeGrant(publicConfig, publicCallback, {
    pkceCodeVerifier: publicVerifier,
    expectedState: publicState,
  });
  assert.equal(publicTokens.scope, 'openid user:read');
  assert.equal(publicTokens.refresh_token, undefined, 'no offline_access, no refresh token');
  seen.public_ok = true;
}

main().then(
  () => {
    process.stdout.write(`${JSON.stringify(seen)}\n`);
  },
  (err) => {
    process.stderr.write(`relying party failed at step "${step}": ${err.stack || err}\n${err.cause ? JSON.stringify(err.cause) : ''}\n`);
    process.exit(1);
  },
);
