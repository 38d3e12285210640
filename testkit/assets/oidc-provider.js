// The test kit's OpenID Connect provider (testkit/src/oidc.rs): npm's oidc-provider, with a
// login form of our own that checks the configured passwords and no consent screen.
//
//   NODE_PATH=/usr/local/lib/rearview-test-node/node_modules node oidc-provider.mjs CONFIG.json
//
// (written out as .mjs: node reads a .js outside a "type": "module" package as CommonJS)
//
// CONFIG.json: {"port", "issuer", "version" (the oidc-provider version we were written for),
// "client": {"client_id", "client_secret", "redirect_uris", "token_endpoint_auth_method"},
// "accounts": [{"login", "password", "sub", "email"}]}.
//
// It listens on 127.0.0.1:port, prints "ready" once it does and runs until killed. Everything
// it holds (sessions, codes, grants) is in memory: a new process is a new provider.
//
// oidc-provider is an ES module, and ES module imports do not read NODE_PATH, so it is loaded
// from there by path.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const packageDir = join(process.env.NODE_PATH ?? '', 'oidc-provider');
let pkg;
try {
  pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));
} catch (e) {
  console.error(`no oidc-provider under NODE_PATH (${packageDir}): ${e.message}`);
  process.exit(3);
}
if (pkg.version !== config.version) {
  console.error(`oidc-provider ${pkg.version} at ${packageDir}, the test kit wants ${config.version}`);
  process.exit(3);
}
const { default: Provider } = await import(pathToFileURL(join(packageDir, pkg.main)).href);

const bySub = new Map(config.accounts.map((a) => [a.sub, a]));
const byLogin = new Map(config.accounts.map((a) => [a.login, a]));

// A signing key of this process's own (the provider's built-in one is public, for demos).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'rearview-test', use: 'sig', alg: 'RS256' };

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client.client_id,
    client_secret: config.client.client_secret,
    redirect_uris: config.client.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: config.client.token_endpoint_auth_method,
  }],
  jwks: { keys: [signingKey] },
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    // The issuer is plain http: a SameSite=None cookie would need Secure, which a browser
    // drops over http.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  responseTypes: ['code'],
  scopes: ['openid', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: [] },
  // The scope's claims go in the ID token too, not only at userinfo.
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = bySub.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: account.email, email_verified: true };
      },
    };
  },
  // No consent screen: the one client is first-party, so it is granted what it asks for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, login, error) {
  const message = error ? `<p id="login-error" role="alert">${escape(error)}</p>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to the test provider</h1>
${message}
<form id="login-form" method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label>Login <input id="login" name="login" value="${escape(login)}" autofocus required></label>
  <label>Password <input id="password" name="password" type="password" required></label>
  <button id="login-submit" type="submit">Sign in</button>
</form>
</body></html>`;
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// GET /interaction/UID: the login form (the only prompt left, consent being granted above).
// POST /interaction/UID/login: checks login and password; right, back to the authorization
// (and so to the client's redirect_uri); wrong, the form again with an error, status 401.
async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const uid = details.uid;
  if (req.method === 'GET' && path === `/interaction/${uid}`) {
    if (details.prompt.name !== 'login') {
      // Not reached while loadExistingGrant grants everything; refuse rather than hang.
      await provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: `the test provider has no ${details.prompt.name} screen`,
      }, { mergeWithLastSubmission: false });
      return;
    }
    send(res, 200, loginPage(uid, '', ''));
    return;
  }
  if (req.method === 'POST' && path === `/interaction/${uid}/login`) {
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const account = byLogin.get(login);
    if (!account || account.password !== (form.get('password') ?? '')) {
      send(res, 401, loginPage(uid, login, 'Wrong login or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  send(res, 404, 'no such interaction route');
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const path = new URL(req.url, config.issuer).pathname;
  if (!path.startsWith('/interaction/')) {
    callback(req, res);
    return;
  }
  interaction(req, res, path).catch((e) => {
    // An expired or unknown interaction (its cookie is gone, say), or a bug here.
    console.error(`interaction ${path}: ${e.stack ?? e}`);
    if (!res.headersSent) send(res, 400, `<p id="interaction-error">${escape(e.message)}</p>`);
  });
});
server.on('error', (e) => {
  console.error(`listen on 127.0.0.1:${config.port}: ${e.message}`);
  process.exit(e.code === 'EADDRINUSE' ? 2 : 1);
});
server.listen(config.port, '127.0.0.1', () => console.log('ready'));
