#!/usr/bin/env node
// A real OpenID provider (panva oidc-provider) for caddy-iap end-to-end tests.
//
//   node server.mjs --port N [--host 127.0.0.1] [--issuer URL] --keys JWKS_FILE [--clients FILE]
//                   [--ttl SECONDS]
//
// --keys    a JWKS with private keys (see keys.mjs). Every key is published at /jwks; the first
//           key signs access tokens (a client may ask for another algorithm, then the first key
//           of that algorithm signs). Rotation is done the documented oidc-provider way: restart
//           on the same port with a new keys file.
// --clients a JSON file, default clients.example.json beside this script:
//   {
//     "scopes": ["items:read", ...],            // optional extra scope names the IdP knows
//     "clients": [{
//       "client_id": "reader", "client_secret": "reader-secret",
//       "scope": "items:read items:write",      // optional: scopes this client may get
//       "sub": "user-reader",                   // optional: token sub (default: client_id)
//       "access_token_ttl": 2,                  // optional: seconds (default --ttl, 300)
//       "alg": "ES256",                         // optional: sign with the first key of this alg
//       "claims": { "groups": [...], "email": "...", "email_verified": true, ... }
//                                               // extra access token claims (caddy-iap ignores
//                                               // an email unless email_verified is true)
//     }]
//   }
//
// POST /token with grant_type=client_credentials, resource=<audience> (any absolute URI) and
// scope returns a JWT access token (typ at+jwt) whose aud is the resource. Prints one line
// `READY {"issuer":...,"port":...,"kids":[...]}` on stdout once it listens.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import http from 'node:http';

import Provider from 'oidc-provider';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = {
    host: '127.0.0.1',
    clients: path.join(here, 'clients.example.json'),
    ttl: 300,
  };
  const need = (i, name) => {
    if (i + 1 >= argv.length) die(`${name} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    switch (a) {
      case '--port': opts.port = Number(need(i, a)); i += 1; break;
      case '--host': opts.host = need(i, a); i += 1; break;
      case '--issuer': opts.issuer = need(i, a); i += 1; break;
      case '--keys': opts.keys = need(i, a); i += 1; break;
      case '--clients': opts.clients = need(i, a); i += 1; break;
      case '--ttl': opts.ttl = Number(need(i, a)); i += 1; break;
      default: die(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) die('--port N is required');
  if (!opts.keys) die('--keys FILE is required');
  if (!Number.isInteger(opts.ttl) || opts.ttl <= 0) die('--ttl must be a positive integer');
  opts.issuer ??= `http://${opts.host}:${opts.port}`;
  return opts;
}

function die(msg) {
  process.stderr.write(`idp: ${msg}\n`);
  process.exit(2);
}

function readJson(file, what) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    die(`cannot read ${what} ${file}: ${err.message}`);
    return undefined;
  }
}

const opts = parseArgs(process.argv.slice(2));
const jwks = readJson(opts.keys, 'keys file');
if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) die(`${opts.keys}: no keys`);
for (const [i, k] of jwks.keys.entries()) {
  if (!k.kid || !k.alg) die(`${opts.keys}: key ${i} needs kid and alg`);
}
const clientsFile = readJson(opts.clients, 'clients file');
const clientList = clientsFile.clients ?? [];
const byId = new Map(clientList.map((c) => [c.client_id, c]));

const knownScopes = new Set(['openid', 'offline_access', ...(clientsFile.scopes ?? [])]);
for (const c of clientList) {
  for (const s of (c.scope ?? '').split(' ').filter(Boolean)) knownScopes.add(s);
}
const allScopes = [...knownScopes].filter((s) => s !== 'openid' && s !== 'offline_access').join(' ');

// The first key of the wanted algorithm signs; by default the algorithm of the first key.
function signingKeyFor(client) {
  const alg = client?.alg ?? jwks.keys[0].alg;
  const key = jwks.keys.find((k) => k.alg === alg);
  if (!key) throw new Error(`no key with alg ${alg} in ${opts.keys}`);
  return { alg, kid: key.kid };
}

const configuration = {
  clients: clientList.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    ...(c.scope ? { scope: c.scope } : {}),
  })),
  jwks,
  scopes: [...knownScopes],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource, client) => {
        const cfg = byId.get(client.clientId);
        return {
          scope: cfg?.scope ?? allScopes,
          audience: resource,
          accessTokenTTL: cfg?.access_token_ttl ?? opts.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: signingKeyFor(cfg) },
        };
      },
    },
  },
  ttl: {
    // Without a resource indicator (an opaque token, as Entra's client credentials look to the
    // gateway) the client's own access_token_ttl applies.
    ClientCredentials: (_ctx, token) =>
      token.resourceServer?.accessTokenTTL ?? byId.get(token.clientId)?.access_token_ttl ?? opts.ttl,
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? opts.ttl,
  },
  // Extra claims per client (groups, email, namespaced roles, realm_access, ...).
  extraTokenClaims: async (_ctx, token) => {
    const cfg = byId.get(token.clientId);
    return cfg?.claims ? structuredClone(cfg.claims) : undefined;
  },
  formats: {
    customizers: {
      jwt: async (_ctx, token, jwt) => {
        const cfg = byId.get(token.clientId);
        if (cfg?.sub) jwt.payload.sub = cfg.sub;
      },
    },
  },
  // Nothing here uses interactive logins; these only quiet start-up warnings.
  cookies: { keys: ['caddy-iap-test-idp-cookie-key'] },
  findAccount: async () => undefined,
};

const provider = new Provider(opts.issuer, configuration);
provider.on('server_error', (_ctx, err) => process.stderr.write(`idp: server_error: ${err.stack}\n`));
provider.on('grant.error', (_ctx, err) => process.stderr.write(`idp: grant.error: ${err.message} ${err.error_description ?? ''}\n`));
provider.on('grant.success', (ctx) => {
  const body = ctx.body ?? {};
  let kid;
  try {
    kid = JSON.parse(Buffer.from(String(body.access_token).split('.')[0], 'base64url')).kid;
  } catch { /* not a JWT */ }
  process.stdout.write(`idp: issued token client=${ctx.oidc.client?.clientId} resource=${ctx.oidc.params.resource} kid=${kid} expires_in=${body.expires_in}\n`);
});

const server = http.createServer(provider.callback());
server.keepAliveTimeout = 1000;
server.on('error', (err) => die(`listen ${opts.host}:${opts.port}: ${err.message}`));
server.listen(opts.port, opts.host, () => {
  const ready = { issuer: opts.issuer, port: opts.port, kids: jwks.keys.map((k) => k.kid) };
  process.stdout.write(`READY ${JSON.stringify(ready)}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
