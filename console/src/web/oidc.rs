//! Single sign-on over OpenID Connect: the authorization code flow with PKCE (RFC 7636, S256),
//! the console as a confidential client.
//!
//! ```text
//! GET /signin/oidc?next=      anyone: a new state, nonce and PKCE verifier are stored
//!                             (oidc_logins, by the state's SHA-256: any replica may take the
//!                             callback), then 303 to the provider's authorization endpoint
//! GET /signin/oidc/callback?code=&state=
//!                             anyone: the state is taken (good once, for WEB_PENDING minutes),
//!                             the code exchanged at the token endpoint (client_secret_basic,
//!                             with the verifier), the ID token checked, the person found; a
//!                             session as for a password sign-in (audited: signin, via oidc)
//! ```
//!
//! # What is trusted
//!
//! The provider's discovery document (`ISSUER/.well-known/openid-configuration`) and keys
//! (`jwks_uri`), fetched from the configured issuer. An ID token is taken only when: its
//! signature is RS256 by a key of that set (by `kid`; the set is fetched again once when a
//! `kid` is unknown), `iss` is the issuer, `aud` holds the client id (and `azp`, when there are
//! several), `exp` is in the future and `iat` not after it (60 s of clock skew), and `nonce` is
//! the one stored with the state. The person is the console person whose name equals the
//! configured claim (`email` by default, which must then be `email_verified`; or `sub`), in
//! canonical form. Roles stay in the console: the provider says who, never what they may do.
//! Anything else is refused with the reason on the sign-in page and audited
//! (`signin.failed`, via oidc).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::new_token;
use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;
use crate::store::web::OidcLoginRow;
use crate::store::{now_ms, sha256_hex};
use crate::web::session::{self, local_path, NextQuery};
use crate::web::WebError;

/// Clock skew allowed on `exp` and `iat`.
const SKEW_SECS: i64 = 60;
/// How long a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How the console signs in with an OpenID provider (`serve --oidc-*`).
#[derive(Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The console's URL as browsers reach it (the redirect URI is this + `/signin/oidc/callback`).
    pub public_url: String,
    /// `email` or `sub`: the claim a console person's name is matched to.
    pub claim: String,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .field("public_url", &self.public_url)
            .field("claim", &self.claim)
            .finish()
    }
}

impl OidcSettings {
    pub fn check(&self) -> Result<(), ConsoleError> {
        let bad = |m: String| Err(ConsoleError::Config(m));
        if !matches!(self.claim.as_str(), "email" | "sub") {
            return bad(format!("--oidc-claim must be email or sub, not {:?}", self.claim));
        }
        for (flag, v) in [("--oidc-issuer", &self.issuer), ("--public-url", &self.public_url)] {
            if url::Url::parse(v).is_err() {
                return bad(format!("{flag} must be a URL, not {v:?}"));
            }
        }
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return bad("--oidc-client-id and the client secret must not be empty".into());
        }
        Ok(())
    }

    fn redirect_uri(&self) -> String {
        format!("{}/signin/oidc/callback", self.public_url.trim_end_matches('/'))
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// The provider as the console knows it: settings, and what discovery found (fetched on first
/// use, so a provider down at start delays nothing but SSO).
pub struct Oidc {
    pub settings: OidcSettings,
    http: reqwest::Client,
    found: Mutex<Option<(Discovery, Jwks)>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Oidc, ConsoleError> {
        settings.check()?;
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConsoleError::Config(format!("OIDC client: {e}")))?;
        Ok(Oidc { settings, http, found: Mutex::new(None) })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let r = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url}: HTTP {}", r.status()));
        }
        r.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// Discovery and keys; fetched again when `refresh`.
    async fn discovered(&self, refresh: bool) -> Result<(Discovery, Jwks), String> {
        let mut found = self.found.lock().await;
        if let (Some(f), false) = (found.as_ref(), refresh) {
            return Ok(f.clone());
        }
        let issuer = self.settings.issuer.trim_end_matches('/');
        let d: Discovery =
            self.get_json(&format!("{issuer}/.well-known/openid-configuration")).await?;
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(format!("the provider calls itself {:?}, not {issuer:?}", d.issuer));
        }
        let keys: Jwks = self.get_json(&d.jwks_uri).await?;
        *found = Some((d.clone(), keys.clone()));
        Ok((d, keys))
    }
}

/// S256 of a PKCE verifier.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

fn oidc_of(state: &AppState) -> Result<&Oidc, WebError> {
    state.web.oidc.as_ref().ok_or_else(|| {
        ApiError::not_found("single sign-on is not configured on this console").into()
    })
}

/// `GET /signin/oidc` (anyone).
pub async fn begin(
    State(state): State<Arc<AppState>>,
    Query(q): Query<NextQuery>,
) -> Result<Response, WebError> {
    let oidc = oidc_of(&state)?;
    let (d, _) = oidc.discovered(false).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            format!("the sign-on provider cannot be reached: {e}"),
        )
    })?;
    let state_token = new_token("st");
    let row = OidcLoginRow {
        verifier: new_token("pkce"),
        nonce: new_token("n"),
        next_path: local_path(q.next.as_deref()),
        created_ms: now_ms(),
    };
    let mut url = url::Url::parse(&d.authorization_endpoint).map_err(|e| {
        ApiError::new(axum::http::StatusCode::BAD_GATEWAY, format!("authorization endpoint: {e}"))
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.settings.client_id)
        .append_pair("redirect_uri", &oidc.settings.redirect_uri())
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state_token)
        .append_pair("nonce", &row.nonce)
        .append_pair("code_challenge", &challenge(&row.verifier))
        .append_pair("code_challenge_method", "S256");
    let key = sha256_hex(state_token.as_bytes());
    state.store.write(move |tx| tx.insert_oidc_login(&key, &row)).await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// The sign-in page again, saying why SSO did not sign in; audited.
async fn refused(state: &AppState, why: String) -> Result<Response, WebError> {
    let w = why.clone();
    state
        .store
        .write(move |tx| {
            tx.audit(
                "oidc",
                "signin.failed",
                "oidc",
                serde_json::json!({"via": "oidc", "reason": w}),
            )
        })
        .await?;
    let to = format!(
        "/signin?error={}",
        crate::web::html::url_encode(&format!("Single sign-on did not sign you in: {why}"))
    );
    Ok(Redirect::to(&to).into_response())
}

/// `GET /signin/oidc/callback` (anyone; see "What is trusted").
pub async fn callback(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, WebError> {
    let oidc = oidc_of(&state)?;
    if let Some(e) = q.error {
        return refused(
            &state,
            format!("the provider answered {e}: {}", q.error_description.unwrap_or_default()),
        )
        .await;
    }
    let (Some(code), Some(state_token)) = (q.code, q.state) else {
        return refused(&state, "the provider's answer has no code or state".into()).await;
    };
    let key = sha256_hex(state_token.as_bytes());
    let Some(login) = state.store.write(move |tx| tx.take_oidc_login(&key)).await? else {
        return refused(&state, "this sign-in was not started here, or was used already".into())
            .await;
    };
    if now_ms() - login.created_ms > 10 * 60_000 {
        return refused(&state, "this sign-in took longer than 10 minutes; start again".into())
            .await;
    }
    let claims = match exchange(oidc, &code, &login).await {
        Ok(c) => c,
        Err(why) => return refused(&state, why).await,
    };
    let wanted = match oidc.settings.claim.as_str() {
        "sub" => claims.get("sub").and_then(|v| v.as_str()).map(str::to_owned),
        _ => {
            if claims.get("email_verified").and_then(|v| v.as_bool()) != Some(true) {
                return refused(
                    &state,
                    "the provider does not vouch for the email (email_verified)".into(),
                )
                .await;
            }
            claims.get("email").and_then(|v| v.as_str()).map(str::to_owned)
        }
    };
    let Some(name) = wanted else {
        return refused(&state, format!("the ID token has no {} claim", oidc.settings.claim)).await;
    };
    let n = name.clone();
    let Some(person_id) = state.store.read(move |tx| tx.person_id_by_name(&n)).await? else {
        return refused(
            &state,
            format!("no console person is named {name:?}; an admin adds people"),
        )
        .await;
    };
    let audit = serde_json::json!({"via": "oidc", "issuer": oidc.settings.issuer, "claim": oidc.settings.claim});
    let cookie = session::begin(&state, person_id, "oidc", audit).await?;
    let mut response = Redirect::to(&login.next_path).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// The code exchanged for an ID token, which is checked; its claims.
async fn exchange(
    oidc: &Oidc,
    code: &str,
    login: &OidcLoginRow,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let (d, _) = oidc.discovered(false).await?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &oidc.settings.redirect_uri()),
        ("code_verifier", &login.verifier),
    ];
    let r = oidc
        .http
        .post(&d.token_endpoint)
        .basic_auth(&oidc.settings.client_id, Some(&oidc.settings.client_secret))
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("token endpoint: {e}"))?;
    if !r.status().is_success() {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        return Err(format!(
            "token endpoint: HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    let answer: TokenAnswer = r.json().await.map_err(|e| format!("token endpoint: {e}"))?;
    let mut claims = verify_id_token(oidc, &answer.id_token, false).await;
    if let Err(Unknown::Kid) = claims {
        claims = verify_id_token(oidc, &answer.id_token, true).await;
    }
    let claims = claims.map_err(|e| match e {
        Unknown::Kid => "the ID token is signed by a key the provider does not publish".to_owned(),
        Unknown::Bad(why) => why,
    })?;
    check_claims(&claims, &oidc.settings, &login.nonce, now_ms() / 1000)?;
    Ok(claims)
}

enum Unknown {
    Kid,
    Bad(String),
}

/// The ID token's claims, if its signature is RS256 by a published key.
async fn verify_id_token(
    oidc: &Oidc,
    token: &str,
    refresh: bool,
) -> Result<serde_json::Map<String, serde_json::Value>, Unknown> {
    let (_, keys) = oidc.discovered(refresh).await.map_err(Unknown::Bad)?;
    let bad = |m: &str| Unknown::Bad(format!("ID token: {m}"));
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWS compact serialization"));
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("unreadable header"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("RS256") {
        return Err(bad("not signed with RS256"));
    }
    let kid = header.get("kid").and_then(|k| k.as_str());
    let key = keys
        .keys
        .iter()
        .find(|k| k.kty == "RSA" && (kid.is_none() || k.kid.as_deref() == kid))
        .ok_or(Unknown::Kid)?;
    let (Some(n), Some(e)) = (&key.n, &key.e) else {
        return Err(bad("the key has no modulus or exponent"));
    };
    let (n, e) = (
        URL_SAFE_NO_PAD.decode(n).map_err(|_| bad("key modulus"))?,
        URL_SAFE_NO_PAD.decode(e).map_err(|_| bad("key exponent"))?,
    );
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad("signature encoding"))?;
    let signed = format!("{h}.{p}");
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
        .map_err(|_| bad("the signature does not verify"))?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| bad("payload encoding"))?;
    serde_json::from_slice(&payload).map_err(|_| bad("payload is not a JSON object"))
}

/// The checks of "What is trusted" on a verified token's claims, at `now` (Unix seconds).
fn check_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    settings: &OidcSettings,
    nonce: &str,
    now: i64,
) -> Result<(), String> {
    let text = |k: &str| claims.get(k).and_then(|v| v.as_str());
    let num = |k: &str| claims.get(k).and_then(|v| v.as_i64());
    if text("iss").map(|i| i.trim_end_matches('/')) != Some(settings.issuer.trim_end_matches('/')) {
        return Err(format!("ID token: issued by {:?}, not the configured issuer", text("iss")));
    }
    let aud: Vec<&str> = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    if !aud.contains(&settings.client_id.as_str()) {
        return Err("ID token: not meant for this console (aud)".into());
    }
    if aud.len() > 1 && text("azp") != Some(settings.client_id.as_str()) {
        return Err("ID token: several audiences and azp is not this console".into());
    }
    match num("exp") {
        Some(exp) if exp + SKEW_SECS > now => {}
        _ => return Err("ID token: expired (exp)".into()),
    }
    if num("iat").is_some_and(|iat| iat - SKEW_SECS > now) {
        return Err("ID token: issued in the future (iat)".into());
    }
    if text("nonce") != Some(nonce) {
        return Err("ID token: the nonce is not this sign-in's (a replayed token?)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "http://127.0.0.1:9/".into(),
            client_id: "console".into(),
            client_secret: "s".into(),
            public_url: "http://127.0.0.1:8443".into(),
            claim: "email".into(),
        }
    }

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_a_fresh_token_for_this_console_and_this_sign_in_is_taken() {
        let s = settings();
        let good = json_claims("console", 1000, "n1");
        assert_eq!(check_claims(&good, &s, "n1", 900), Ok(()));
        let cases = [
            (json_claims("other", 1000, "n1"), "aud"),
            (json_claims("console", 800, "n1"), "exp"),
            (json_claims("console", 1000, "n2"), "nonce"),
            (
                claims(
                    serde_json::json!({"iss": "http://evil/", "aud": "console", "exp": 1000, "nonce": "n1"}),
                ),
                "issued by",
            ),
            (
                claims(
                    serde_json::json!({"iss": "http://127.0.0.1:9", "aud": ["console", "x"], "exp": 1000, "nonce": "n1"}),
                ),
                "azp",
            ),
            (
                claims(
                    serde_json::json!({"iss": "http://127.0.0.1:9", "aud": "console", "exp": 1000, "iat": 1200, "nonce": "n1"}),
                ),
                "iat",
            ),
        ];
        for (c, why) in cases {
            let e = check_claims(&c, &s, "n1", 900).unwrap_err();
            assert!(e.contains(why), "{e} (want {why})");
        }
    }

    fn json_claims(aud: &str, exp: i64, nonce: &str) -> serde_json::Map<String, serde_json::Value> {
        claims(
            serde_json::json!({"iss": "http://127.0.0.1:9", "aud": aud, "exp": exp, "nonce": nonce}),
        )
    }

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // BASE64URL(SHA-256(verifier)) without padding, as Python's hashlib and base64 give it.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gXk-fxGeE"),
            "UutBPsdl3TSa5uUgQHt8UDiIT7jGg1kU7JgeH1f9zqE"
        );
    }
}
