// The official MCP TypeScript SDK against extauth, end to end: a small MCP server protected by
// extauth (a 401 pointing at the resource metadata extauth serves, JWTs checked against
// extauth's JWKS with the server's own URL as audience) and the SDK's client, whose auth() must
// get from a bare 401 to a tool call — resource metadata, authorization server metadata, client
// ID metadata document (or dynamic registration), PKCE with `resource`, tokens — and refresh by
// itself once the access token has expired.
//
// Environment: BROKER (its URL), SESSION (a signed-in browser's Cookie header), MCP_PORT (where
// the MCP server listens; its URL is registered as a protected resource), MODE (`document` or
// `registration`), and for `document`: DOC_PORT, TLS_CERT, TLS_KEY (an https server for the
// client's metadata document, which the SDK insists be https). Prints one JSON line of results.

import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import * as jose from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const broker = process.env.BROKER;
const session = process.env.SESSION;
const mode = process.env.MODE;
const mcpPort = Number(process.env.MCP_PORT);
const resource = `http://127.0.0.1:${mcpPort}/mcp`;
const metadataUrl = `${broker}/.well-known/oauth-protected-resource/mcp`;
const jwks = jose.createRemoteJWKSet(new URL(`${broker}/oauth2/jwks`));
const seen = { unauthorized: 0, verified: 0, subjects: new Set(), tokens: new Set() };

// The MCP server: stateless, one transport per request, behind a bearer check.
const mcp = http.createServer(async (req, res) => {
  const challenge = `Bearer resource_metadata="${metadataUrl}", scope="mcp:tools"`;
  const header = req.headers.authorization ?? '';
  let claims;
  try {
    if (!header.startsWith('Bearer ')) throw new Error('no token');
    const token = header.slice(7);
    ({ payload: claims } = await jose.jwtVerify(token, jwks, {
      issuer: broker,
      audience: resource,
      typ: 'at+jwt',
    }));
    if (!String(claims.scope).split(' ').includes('mcp:tools')) throw new Error('scope');
    seen.verified += 1;
    seen.tokens.add(token);
  } catch {
    seen.unauthorized += 1;
    res.writeHead(401, { 'WWW-Authenticate': challenge, 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_token' }));
    return;
  }
  let body = '';
  for await (const chunk of req) body += chunk;
  const server = new McpServer({ name: 'extauth-test-mcp', version: '1.0.0' });
  server.registerTool('whoami', { description: 'The caller, as the token says' }, async () => ({
    content: [{ type: 'text', text: String(claims.sub) }],
  }));
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => { transport.close(); server.close(); });
  await server.connect(transport);
  await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined);
  seen.subjects.add(String(claims.sub));
});
await new Promise((ok) => mcp.listen(mcpPort, '127.0.0.1', ok));

// The client's callback (it never gets a browser: the test plays the browser).
const callbackServer = http.createServer((req, res) => { res.writeHead(200); res.end('done'); });
await new Promise((ok) => callbackServer.listen(0, '127.0.0.1', ok));
const redirectUrl = `http://127.0.0.1:${callbackServer.address().port}/callback`;

// The client metadata document, over https.
let documentServer;
let clientMetadataUrl;
if (mode === 'document') {
  const port = Number(process.env.DOC_PORT);
  clientMetadataUrl = `https://127.0.0.1:${port}/oauth/client.json`;
  documentServer = https.createServer(
    { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) },
    (req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'max-age=600' });
      res.end(JSON.stringify({
        client_id: clientMetadataUrl,
        client_name: 'MCP SDK test client',
        redirect_uris: [redirectUrl],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }));
    },
  );
  await new Promise((ok) => documentServer.listen(port, '127.0.0.1', ok));
}

function unescape(text) {
  return text
    .replace(/&#x([0-9a-fA-F]+);/g, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

// Plays the signed-in user's browser: open the authorization URL, allow on the consent page,
// read the code from the redirect to the client's loopback callback.
const authorizations = [];
async function browse(url) {
  authorizations.push(url.toString());
  let response = await fetch(url, { headers: { cookie: session }, redirect: 'manual' });
  if (response.status === 200) {
    const html = await response.text();
    const page = html.slice(html.indexOf('action="/oauth2/authorize"'));
    const form = new URLSearchParams();
    for (const [, name, value] of page.slice(0, page.indexOf('</form>')).matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
      form.append(name, unescape(value));
    }
    form.append('decision', 'allow');
    response = await fetch(`${broker}/oauth2/authorize`, {
      method: 'POST', body: form, redirect: 'manual',
      headers: { cookie: session, 'content-type': 'application/x-www-form-urlencoded' },
    });
  }
  const location = response.headers.get('location');
  if (!location?.startsWith(redirectUrl)) {
    throw new Error(`the authorization ended at ${response.status} ${location}: ${await response.text()}`);
  }
  const back = new URL(location);
  if (back.searchParams.get('error')) throw new Error(`refused: ${back.search}`);
  return back.searchParams.get('code');
}

let pendingCode;
let information;
let stored;
let verifier;
const provider = {
  get redirectUrl() { return redirectUrl; },
  clientMetadataUrl,
  get clientMetadata() {
    return {
      client_name: 'MCP SDK test client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  },
  clientInformation() { return information; },
  saveClientInformation(info) { information = info; },
  tokens() { return stored; },
  saveTokens(tokens) { stored = tokens; },
  async redirectToAuthorization(url) { pendingCode = await browse(url); },
  saveCodeVerifier(v) { verifier = v; },
  codeVerifier() { return verifier; },
};

async function connect() {
  const client = new Client({ name: 'extauth-test-client', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(resource), { authProvider: provider });
  try {
    await client.connect(transport);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    await transport.finishAuth(pendingCode);
    return connect();
  }
  return client;
}

const results = { mode };
try {
  const client = await connect();
  const first = await client.callTool({ name: 'whoami', arguments: {} });
  results.first_call = first.content[0].text;
  results.client_id = information?.client_id;
  results.authorize_url = authorizations[0];
  results.scope = stored?.scope;
  results.had_refresh_token = Boolean(stored?.refresh_token);
  const firstToken = stored?.access_token;
  await client.close();
  // Wait out the access token (the broker runs with a short lifetime), then call again: the
  // server's 401 makes the SDK refresh by itself, with no second authorization.
  await new Promise((ok) => setTimeout(ok, Number(process.env.WAIT_MS ?? 3500)));
  const again = await connect();
  const second = await again.callTool({ name: 'whoami', arguments: {} });
  results.second_call = second.content[0].text;
  results.refreshed = Boolean(stored?.access_token) && stored.access_token !== firstToken;
  results.authorizations = authorizations.length;
  await again.close();
} catch (error) {
  results.error = String(error?.stack ?? error);
}
results.unauthorized = seen.unauthorized;
results.verified = seen.verified;
console.log(JSON.stringify(results));
mcp.close();
callbackServer.close();
documentServer?.close();
process.exit(0);
