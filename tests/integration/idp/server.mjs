// A real OpenID provider for ledgergate's integration tests (oidc-provider 9.x).
//
// Usage: node server.mjs CONFIG.json, where the JSON document holds
//   port, issuer, clients (oidc-provider client metadata), users {login: {email, groups, ...}},
//   jwks {keys: [private JWKs]}, and optionally device_interval (seconds; polling interval
//   announced by the device authorization endpoint, default 5).
// The tests own the private keys, so they can forge tokens with them and rotate them by
// restarting this server with new ones. It binds 127.0.0.1 only and prints "listening"
// once ready. devInteractions serve the login and consent pages (any password works).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = cfg.users ?? {};

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  jwks: cfg.jwks,
  cookies: { keys: cfg.cookie_keys ?? ['ledgergate-test-idp-cookie-key'] },
  // Claims the tests rely on; `groups` rides with `openid` so every login carries it.
  claims: {
    openid: ['sub', 'groups'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Put scope-granted claims in the ID token itself, not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 3600,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 3600,
  },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email_verified: true, ...user };
      },
    };
  },
});

// RFC 8628 lets the server announce its polling interval; a short one keeps tests fast.
const interval = cfg.device_interval;
if (interval !== undefined) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.body && typeof ctx.body === 'object' && 'device_code' in ctx.body) {
      ctx.body = { ...ctx.body, interval };
    }
  });
}

const server = createServer(provider.callback());
server.listen(cfg.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${cfg.issuer}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
