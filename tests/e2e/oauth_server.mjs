// An OAuth 2.1 authorization server for mcp-tunnel's end-to-end tests: npm `oidc-provider`
// (tests/e2e/package.json), standing in for the public IdP an MCP host reaches directly.
//
//   - issuer http://127.0.0.1:<port> (loopback only; the port is chosen by the OS unless --port)
//   - dynamic client registration (RFC 7591), open, public clients (token_endpoint_auth_method
//     none) allowed; PKCE (S256) required for every client
//   - resource indicators (RFC 8707): any http(s) resource is accepted, with scope `mcp:tools`;
//     its access tokens are JWTs (RFC 9068) whose `aud` is the requested resource
//   - automated login and consent: the interaction URL finishes every interaction at once with a
//     fixed test account and grants whatever the prompt asks for, so no browser is needed
//
// Prints `oauth server listening on http://127.0.0.1:<port>` on stdout once it accepts
// connections. Usage: node oauth_server.mjs [--port PORT]
import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';
const ACCOUNT = 'e2e-user';
const RESOURCE_SCOPE = 'mcp:tools';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

// A listening socket first: the issuer names its port.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(values.port), HOST, resolve);
});
const issuer = `http://${HOST}:${server.address().port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  // Registration checks a client's `scope` against this list, so the resource's scope is here too.
  scopes: ['openid', 'offline_access', RESOURCE_SCOPE],
  pkce: { required: () => true },
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        const url = new URL(resourceIndicator);
        if (url.protocol !== 'http:' && url.protocol !== 'https:') {
          throw new Error(`unexpected resource ${resourceIndicator}`);
        }
        return {
          scope: RESOURCE_SCOPE,
          audience: resourceIndicator,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  findAccount: async (_ctx, accountId) => ({
    accountId,
    claims: async () => ({ sub: accountId }),
  }),
});

// The interaction: login as ACCOUNT, then consent to everything the prompt lists missing.
async function interact(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interact(req, res).catch((err) => {
      console.error(`interaction failed: ${err}`);
      res.statusCode = 500;
      res.end('interaction failed');
    });
    return;
  }
  callback(req, res);
});
provider.on('server_error', (_ctx, err) => console.error(`server_error: ${err.stack ?? err}`));

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log(`oauth server listening on ${issuer}`);
