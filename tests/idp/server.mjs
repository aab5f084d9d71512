#!/usr/bin/env node
// A real OpenID provider (panva oidc-provider) for caddy-iap end-to-end tests.
//
//   node server.mjs --port N [--host 127.0.0.1] [--issuer URL] --keys JWKS_FILE [--clients FILE]
//                   [--ttl SECONDS]
//
// --keys    a JWKS with private keys (see keys.mjs). Every key is published at /jwks; the first
//           key signs access and ID tokens (a client may ask for another algorithm, then the
//           first key of that algorithm signs). Rotation is done the documented oidc-provider
//           way: restart on the same port with a new keys file.
// --ttl     lifetime of access and ID tokens unless a client sets its own (default 300 s).
// --clients a JSON file, default clients.example.json beside this script:
//   {
//     "scopes": ["items:read", ...],            // optional extra scope names the IdP knows
//     "clients": [{
//       // A machine client (no grant_types): client_credentials only.
//       "client_id": "reader", "client_secret": "reader-secret",
//       "scope": "items:read items:write",      // optional: scopes this client may get
//       "sub": "user-reader",                   // optional: token sub (default: client_id)
//       "access_token_ttl": 2,                  // optional: seconds (default --ttl, 300)
//       "alg": "ES256",                         // optional: sign with the first key of this alg
//       "claims": { "groups": [...], "email": "...", "email_verified": true, ... }
//                                               // extra access token claims (caddy-iap ignores
//                                               // an email unless email_verified is true)
//     }, {
//       // A browser client (a relying party such as the gateway): authorization code flow,
//       // PKCE S256 required, refresh tokens when it has the refresh_token grant.
//       "client_id": "gateway", "client_secret": "gateway-secret",
//       "grant_types": ["authorization_code", "refresh_token"],
//       "redirect_uris": ["https://127.0.0.1:8443/.iap/callback"],   // exact match, http or https
//       "post_logout_redirect_uris": ["https://127.0.0.1:8443/"],    // optional
//       "id_token_ttl": 60,                     // optional: seconds (default --ttl)
//       "access_token_ttl": 60,                 // optional: seconds (default --ttl)
//       "token_endpoint_auth_method": "client_secret_post"   // optional, default client_secret_basic
//     }],
//     "users": {                                // people who sign in on the login form
//       "alice": {                              // the user name is the sub
//         "password": "alice-password",
//         "claims": { "email": "alice@example.com", "email_verified": true, "name": "Alice",
//                     "groups": ["staff"], "roles": ["viewer"], ... }
//       }
//     }
//   }
//
// POST /token with grant_type=client_credentials, resource=<audience> (any absolute URI) and
// scope returns a JWT access token (typ at+jwt) whose aud is the resource.
//
// Browser sign-in: /auth shows a plain HTML form (title "Sign in", fields `username` and
// `password`, button `sign-in`; a wrong password shows `#error`). Consent is granted without a
// page. ID tokens carry the user's claims (not only /me): email and email_verified with scope
// `email`, name and the other profile claims with scope `profile`, every other claim (groups,
// roles, namespaced ones...) with `openid`. RP-initiated logout (/session/end) shows a form whose
// button `logout-confirm` is clicked by a script on load, so it ends the IdP session and goes
// back to post_logout_redirect_uri without any user action. Each sign-in and sign-out is logged.
//
// Prints one line `READY {"issuer":...,"port":...,"kids":[...]}` on stdout once it listens.

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

const users = clientsFile.users ?? {};
for (const [name, u] of Object.entries(users)) {
  if (typeof u?.password !== 'string') die(`${opts.clients}: user ${name} needs a password`);
}
// Which scope releases which user claim. The standard OIDC ones as specified; any other claim a
// user has (groups, roles, namespaced claims...) comes with `openid`, so a relying party that
// asks for `openid` alone still sees what its authorization rules look at.
const scopeClaims = {
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name', 'middle_name', 'nickname', 'preferred_username',
    'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'],
};
const standardClaims = new Set(Object.values(scopeClaims).flat());
const otherClaims = new Set(Object.values(users).flatMap((u) => Object.keys(u.claims ?? {})));
const claimsConfig = {
  openid: ['sub', ...[...otherClaims].filter((c) => c !== 'sub' && !standardClaims.has(c))],
  ...scopeClaims,
};

const isBrowserClient = (c) => (c.grant_types ?? []).includes('authorization_code');

function clientMetadata(c) {
  const common = {
    client_id: c.client_id,
    client_secret: c.client_secret,
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    ...(c.scope ? { scope: c.scope } : {}),
  };
  if (!isBrowserClient(c)) {
    return { ...common, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };
  }
  return {
    ...common,
    grant_types: c.grant_types,
    response_types: ['code'],
    redirect_uris: c.redirect_uris ?? [],
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
  };
}

async function findAccount(_ctx, sub) {
  const user = Object.hasOwn(users, sub) ? users[sub] : undefined;
  if (!user) return undefined;
  return {
    accountId: sub,
    // oidc-provider keeps only the claims the granted scopes release (claimsConfig).
    claims: async () => ({ ...structuredClone(user.claims ?? {}), sub }),
  };
}

// The first key of the wanted algorithm signs; by default the algorithm of the first key.
function signingKeyFor(client) {
  const alg = client?.alg ?? jwks.keys[0].alg;
  const key = jwks.keys.find((k) => k.alg === alg);
  if (!key) throw new Error(`no key with alg ${alg} in ${opts.keys}`);
  return { alg, kid: key.kid };
}

const configuration = {
  clients: clientList.map(clientMetadata),
  jwks,
  scopes: [...knownScopes],
  claims: claimsConfig,
  // Claims go into the ID token, not only /me: the gateway reads its identity from the ID token.
  conformIdTokenClaims: false,
  findAccount,
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // Every authorization code client must send an S256 code_challenge (the only method offered).
  pkce: { required: (_ctx, client) => client.grantTypeAllowed('authorization_code') },
  // Refresh tokens without the offline_access ceremony (which needs prompt=consent): a browser
  // client with the refresh_token grant gets one, bound to the IdP session (logout ends it).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Distinct names: cookies are per host, not per port, and the gateway lives on 127.0.0.1 too.
  cookies: {
    keys: ['caddy-iap-test-idp-cookie-key'],
    names: { session: 'idp_session', interaction: 'idp_interaction', resume: 'idp_resume' },
  },
  // Plain pages: the defaults load a web font, which would stall page loads without internet.
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1><pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // The form oidc-provider renders only holds the xsrf token; the button carries logout=yes
      // (end the whole IdP session, not only this client's part). Clicked on load so a relying
      // party's logout needs no user action, as with an IdP that trusts the id_token_hint.
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `<h1>Sign out</h1>${form}
<button id="logout-confirm" type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>document.getElementById('logout-confirm').click();</script>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<h1 id="signed-out">Signed out</h1>');
      },
    },
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
    AccessToken: (_ctx, token) =>
      token.resourceServer?.accessTokenTTL ?? byId.get(token.clientId)?.access_token_ttl ?? opts.ttl,
    IdToken: (_ctx, _token, client) => byId.get(client.clientId)?.id_token_ttl ?? opts.ttl,
    AuthorizationCode: 60,
    RefreshToken: 24 * 3600,
    Interaction: 3600,
    Session: 3600,
    Grant: 3600,
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
  process.stdout.write(`idp: issued token client=${ctx.oidc.client?.clientId} grant=${ctx.oidc.params.grant_type} resource=${ctx.oidc.params.resource} kid=${kid} expires_in=${body.expires_in}\n`);
});

provider.on('end_session.success', (ctx) => {
  process.stdout.write(`idp: logout client=${ctx.oidc.client?.clientId ?? '-'}\n`);
});

// ---- Browser sign-in: the interaction pages (oidc-provider leaves their UI to the host).

function esc(v) {
  return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>${body}</body></html>`;
}

function loginPage(ctx, details, error) {
  ctx.type = 'html';
  ctx.body = page('Sign in', `<h1>Sign in</h1>
<p>to <span id="client">${esc(details.params.client_id)}</span></p>
${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(details.uid)}/login">
  <label>Username <input id="username" name="username" autocomplete="username" autofocus></label>
  <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
  <button id="sign-in" type="submit">Sign in</button>
</form>`);
}

async function formBody(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(text);
}

// Grants what the client asked for: the test IdP has no consent page.
async function autoConsent(details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

provider.use(async (ctx, next) => {
  const m = /^\/interaction\/([\w-]+)(\/login)?$/.exec(ctx.path);
  if (!m) return next();
  ctx.set('cache-control', 'no-store');
  // Checks the interaction cookie against the uid; without it oidc-provider answers 400.
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'consent') {
    result = await autoConsent(details);
  } else if (details.prompt.name !== 'login') {
    throw new Error(`unsupported prompt ${details.prompt.name}`);
  } else if (ctx.method === 'GET' && !m[2]) {
    return loginPage(ctx, details);
  } else if (ctx.method === 'POST' && m[2]) {
    const form = await formBody(ctx.req);
    const username = form.get('username') ?? '';
    const user = Object.hasOwn(users, username) ? users[username] : undefined;
    if (!user || user.password !== form.get('password')) {
      // No user name either: people type their password into the wrong field.
      process.stdout.write(`idp: login refused client=${details.params.client_id}\n`);
      return loginPage(ctx, details, 'Invalid username or password.');
    }
    process.stdout.write(`idp: login user=${username} client=${details.params.client_id}\n`);
    result = { login: { accountId: username } };
  } else {
    ctx.status = 405;
    return undefined;
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
  ctx.status = 303;
  return undefined;
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
