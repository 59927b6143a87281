// A real third-party OpenID provider for jitssh's end-to-end tests: npm
// `oidc-provider` on a loopback port, configured like a company IdP that
// jitssh's CLI logs in to. See README.md beside this file.
//
//   node server.mjs --port N [--config FILE] [--die-with-parent]
//
// Prints exactly one line on stdout, `READY http://127.0.0.1:N`, once it
// listens. Everything else (oidc-provider's notices included) goes to stderr.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints NOTICEs with console.info (stdout); keep stdout for READY.
console.info = (...args) => console.error(...args);

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    config: { type: 'string' },
    'die-with-parent': { type: 'boolean', default: false },
  },
});
const port = Number(args.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.mjs --port N [--config FILE] [--die-with-parent]');
  process.exit(2);
}

// ---------------------------------------------------------------------------
// Configuration: built-in defaults, overridden key by key by --config FILE.

const DEFAULTS = {
  users: [
    {
      sub: 'user-alice', username: 'alice', email: 'alice@example.com',
      email_verified: true, groups: ['developers'], password: 'alice-password',
    },
    {
      sub: 'user-bob', username: 'bob', email: 'bob@example.com',
      email_verified: true, groups: ['developers', 'sre'], password: 'bob-password',
    },
  ],
  // The interactive CLI: public, PKCE S256, loopback redirects (RFC 8252), device flow.
  client: {
    client_id: 'jitssh',
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback', 'http://[::1]/callback'],
    // true: any path on an http loopback host and any port is accepted;
    // false: only the registered paths (any port, RFC 8252 section 7.3).
    loopback_any_path: true,
    id_token_signed_response_alg: 'ES256',
    // false: refresh tokens for this client even without the offline_access scope.
    refresh_requires_offline_access: false,
  },
  // Automation: confidential client, client_credentials grant, JWT access tokens.
  automation: {
    client_id: 'jitssh-automation',
    client_secret: 'jitssh-automation-secret',
    resource: 'urn:jitssh:ca',
    audience: 'urn:jitssh:ca',
    scope: 'issue',
    access_token_alg: 'ES256',
  },
  // Device flow: the `interval` (seconds) added to device authorization
  // responses (oidc-provider sends none, so clients would wait 5 s; RFC 8628).
  device: { interval: 1 },
  // Seconds.
  ttl: {
    id_token: 300,
    access_token: 300,
    refresh_token: 86400,
    authorization_code: 60,
    device_code: 600,
    interaction: 600,
    session: 86400,
    grant: 86400,
  },
  // Signing keys: null = fresh ES256 (P-256), RS256 (RSA 2048) and EdDSA
  // (Ed25519) keys at every start. Or a JWKS object with private keys.
  jwks: null,
  cookie_keys: ['jitssh-test-cookie-key-do-not-use-in-production'],
};

function loadConfig(file) {
  const given = file ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const config = { ...DEFAULTS, ...given };
  for (const key of ['client', 'automation', 'device', 'ttl']) {
    config[key] = { ...DEFAULTS[key], ...(given[key] ?? {}) };
  }
  config.users = config.users.map((u) => ({
    sub: u.sub ?? `user-${u.username}`,
    username: u.username,
    email: u.email ?? `${u.username}@example.com`,
    email_verified: u.email_verified ?? true,
    groups: u.groups ?? [],
    password: u.password,
  }));
  for (const u of config.users) {
    if (typeof u.username !== 'string' || !u.username) {
      throw new Error(`config: every user needs a username: ${JSON.stringify(u)}`);
    }
  }
  return config;
}

const config = loadConfig(args.config);
const issuer = `http://127.0.0.1:${port}`;

function findUser(id) {
  if (typeof id !== 'string') return undefined;
  return config.users.find((u) => u.sub === id) ?? config.users.find((u) => u.username === id);
}

// ---------------------------------------------------------------------------
// Keys: our own JWKS (oidc-provider's development keys are RS256 only).

function generateJwks() {
  const suffix = randomBytes(4).toString('hex');
  const key = (type, options, alg) => ({
    ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
    kid: `${alg.toLowerCase()}-${suffix}`,
    alg,
    use: 'sig',
  });
  // The first key is the default for algorithms that several keys could serve.
  return {
    keys: [
      key('ec', { namedCurve: 'P-256' }, 'ES256'),
      key('rsa', { modulusLength: 2048 }, 'RS256'),
      key('ed25519', {}, 'EdDSA'),
    ],
  };
}

// ---------------------------------------------------------------------------
// The provider.

const { client: cli, automation: auto, ttl } = config;

const oidc = new Provider(issuer, {
  clients: [
    {
      client_id: cli.client_id,
      client_name: 'jitssh',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: cli.redirect_uris,
      id_token_signed_response_alg: cli.id_token_signed_response_alg,
    },
    {
      client_id: auto.client_id,
      client_secret: auto.client_secret,
      client_name: 'jitssh automation',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      // No `scope` metadata: it may list only the provider's OpenID scopes;
      // the resource server (getResourceServerInfo) grants `issue`.
    },
  ],
  jwks: config.jwks ?? generateJwks(),
  cookies: { keys: config.cookie_keys },

  // Claims. conformIdTokenClaims: false puts the scope-requested claims in the
  // ID token itself (not only at userinfo), as jitssh's CA reads them from it.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  responseTypes: ['code'],
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    const user = findUser(id);
    if (!user) return undefined;
    return {
      accountId: user.sub,
      async claims() {
        return {
          sub: user.sub,
          email: user.email,
          email_verified: user.email_verified,
          preferred_username: user.username,
          groups: user.groups,
        };
      },
    };
  },

  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' || client.clientId === cli.client_id },

  // Refresh tokens for the CLI whenever it may use the refresh_token grant
  // (with the default `true` they need offline_access, which oidc-provider
  // drops when the request has a `prompt` without `consent`).
  async issueRefreshToken(_ctx, client, source) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    return !cli.refresh_requires_offline_access || source.scopes.has('offline_access');
  },
  // Tokens outlive the provider's browser session (a CLI is not a browser).
  expiresWithSession: async () => false,

  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(_ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return client.clientId === auto.client_id ? auto.resource : undefined;
      },
      async getResourceServerInfo(_ctx, resource, client) {
        if (resource === auto.resource && client.clientId === auto.client_id) {
          return {
            scope: auto.scope,
            audience: auto.audience,
            accessTokenTTL: ttl.access_token,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: auto.access_token_alg } },
          };
        }
        throw new errors.InvalidTarget();
      },
      useGrantedResource: async () => false,
    },
  },

  ttl: {
    AccessToken: ttl.access_token,
    AuthorizationCode: ttl.authorization_code,
    ClientCredentials: ttl.access_token,
    DeviceCode: ttl.device_code,
    Grant: ttl.grant,
    IdToken: ttl.id_token,
    Interaction: ttl.interaction,
    RefreshToken: ttl.refresh_token,
    Session: ttl.session,
  },
});
oidc.proxy = false;

// RFC 8252 section 7.3: a loopback redirect URI may use any port.
// oidc-provider already ignores the port for native clients' registered
// paths; with loopback_any_path it also accepts any path on a loopback host.
if (cli.loopback_any_path) {
  const registered = oidc.Client.prototype.redirectUriAllowed;
  oidc.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
    if (registered.call(this, value)) return true;
    if (this.clientId !== cli.client_id) return false;
    const url = URL.parse(value);
    return !!url && url.protocol === 'http:' && url.hash === ''
      && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  };
}

// Passwords. devInteractions' login page accepts any login name; this
// middleware checks the name and password against the configured users
// before the built-in handler sees the form, answers 401 with a fresh form on
// a mismatch, and replaces the name by the user's `sub` (the account id).
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
oidc.use(async (ctx, next) => {
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)
      && ctx.is('application/x-www-form-urlencoded')) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    if (form.get('prompt') === 'login') {
      const user = findUser(form.get('login'));
      const passwordOk = user && (user.password === undefined || user.password === form.get('password'));
      if (!passwordOk) {
        console.error(`login refused for ${JSON.stringify(form.get('login'))}: unknown user or wrong password`);
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><html><head><title>Sign-in</title></head><body>
<p class="error">Invalid username or password.</p>
<form autocomplete="off" action="${esc(ctx.path)}" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" value="${esc(form.get('login') ?? '')}">
  <input required type="password" name="password">
  <button type="submit">Sign-in</button>
</form></body></html>`;
        return;
      }
      form.set('login', user.sub);
    }
    // oidc-provider's body parser reads req.body when the stream is consumed.
    ctx.req.body = form.toString();
  }
  await next();
});

// RFC 8628 polling interval, so device-flow tests need not wait 5 s a poll.
oidc.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.status === 200
      && ctx.body && typeof ctx.body === 'object' && config.device.interval != null) {
    ctx.body = { ...ctx.body, interval: config.device.interval };
  }
});

oidc.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = createServer(oidc.callback());
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
if (args['die-with-parent']) {
  // The test harness holds our stdin open; when it dies, so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
