// oidc-provider as the upstream forge and OIDC IdP of extauth's tests.
//
// Configuration comes as JSON in IDP_CONFIG: { clients: [...], accessTokenTtl?, account? }.
// Listens on 127.0.0.1 (a free port) and prints one JSON line {"issuer": "..."} when ready.
// Interactions (login, consent) complete by themselves for the account `account` (default
// "alice"), so an HTTP client walking the redirects links without any UI.
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.IDP_CONFIG || '{}');
const defaultAccount = config.account || 'alice';

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients || [],
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.com`, email_verified: true, name: id };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      deviceFlow: { enabled: true },
    },
    // Like a forge: every client allowed to refresh gets a refresh token, rotated on each use
    // (a rotated one presented again fails with invalid_grant and revokes the grant).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    // A forge's grants outlive the browser session that created them.
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: config.accessTokenTtl || 3600,
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
  // Why a grant was refused, on the test's stderr (the answer itself only says invalid_grant).
  provider.on('grant.error', (ctx, err) => console.error(`idp grant.error: ${err.message} (${err.error_detail || ''})`));

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/test/access-token/destroy') {
        await destroyAccessToken(provider, req, res);
        return;
      }
      const match = req.url.match(/^\/interaction\/([^/?]+)/);
      if (match && req.method === 'GET') {
        await completeInteraction(provider, req, res);
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

// Test control: the forge stops accepting one access token while its grant and refresh token
// live on (as when a provider invalidates a leaked token). Revocation (RFC 7009) would also end
// the refresh token.
async function destroyAccessToken(provider, req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const token = new URLSearchParams(body).get('token');
  const found = token && await provider.AccessToken.find(token);
  if (found) await found.destroy();
  res.statusCode = found ? 204 : 404;
  res.end();
}

async function completeInteraction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: defaultAccount } }, {
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
