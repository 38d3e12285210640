//! The OpenID provider as a relying party meets it: discovery and JWKS, then a whole
//! authorization-code + PKCE sign-in in the real browser (a wrong password refused by the form
//! first), the code exchanged at the token endpoint, and the ID token's claims checked. Needs
//! node with oidc-provider and Chromium (scripts/setup-debian.sh); without them these tests
//! fail, they do not skip.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rearview_testkit::browser::Browser;
use rearview_testkit::oidc::{
    self, OidcAccount, OidcConfig, OidcProvider, TokenAuth, LOGIN_ERROR, LOGIN_FORM,
};
use ring::rand::SecureRandom as _;
use serde_json::Value;

const CLIENT_ID: &str = "rearview-console";
const CLIENT_SECRET: &str = "kit-client-secret";
const WAIT: Duration = Duration::from_secs(15);

fn accounts() -> Vec<OidcAccount> {
    vec![
        OidcAccount {
            login: "alice".into(),
            password: "correct horse".into(),
            sub: "sub-alice-1".into(),
            email: "alice@example.test".into(),
        },
        OidcAccount {
            login: "bob".into(),
            password: "battery staple".into(),
            sub: "sub-bob-2".into(),
            email: "bob@example.test".into(),
        },
    ]
}

/// The client's redirect target: a listener on a thread that answers every request with a
/// small page and sends each request's query parameters down the channel.
fn redirect_target() -> (String, mpsc::Receiver<HashMap<String, String>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a test port");
    let uri = format!("http://{}/callback", listener.local_addr().expect("local addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let Ok(reader) = conn.try_clone() else { continue };
            let mut reader = BufReader::new(reader);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(n) if n > 0 && header != "\r\n" => {}
                    _ => break,
                }
            }
            let target = line.split(' ').nth(1).unwrap_or("/");
            if target.starts_with("/callback") {
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let _ = tx.send(form_decode(query));
            }
            let body =
                "<!doctype html><title>callback</title><p id=\"done\">back at the client</p>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (uri, rx)
}

/// `a=b&c=d` (application/x-www-form-urlencoded) into a map.
fn form_decode(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("a hex escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// RFC 6749 2.3.1: Basic over the form-urlencoded id and secret.
fn basic_auth() -> String {
    let pair = format!("{}:{}", percent_encode(CLIENT_ID), percent_encode(CLIENT_SECRET));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn start(redirect_uri: &str, token_auth: TokenAuth) -> OidcProvider {
    let config = OidcConfig {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![redirect_uri.to_owned()],
        accounts: accounts(),
        token_auth,
    };
    OidcProvider::start(config).unwrap_or_else(|e| panic!("cannot start the OIDC provider: {e}"))
}

fn get_json(url: &str) -> Value {
    ureq::get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}")).into_json().unwrap()
}

/// Discovery names this issuer and its endpoints; the JWKS holds the one RS256 signing key.
#[test]
fn discovery_and_jwks() {
    let (redirect_uri, _) = redirect_target();
    let provider = start(&redirect_uri, TokenAuth::default());
    let issuer = provider.issuer();
    assert_eq!(issuer, format!("http://127.0.0.1:{}", provider.port()));
    let discovery = get_json(&provider.discovery_url());
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["authorization_endpoint"], format!("{issuer}/auth").as_str());
    assert_eq!(discovery["token_endpoint"], format!("{issuer}/token").as_str());
    assert_eq!(discovery["userinfo_endpoint"], format!("{issuer}/me").as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/jwks").as_str());
    assert_eq!(discovery["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(discovery["response_types_supported"], serde_json::json!(["code"]));
    let scopes = discovery["scopes_supported"].as_array().unwrap();
    for scope in ["openid", "email", "profile"] {
        assert!(scopes.iter().any(|s| s == scope), "{scope} in {scopes:?}");
    }
    let jwks = get_json(discovery["jwks_uri"].as_str().unwrap());
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["kid"], "rearview-test");
    assert!(keys[0].get("d").is_none(), "no private part in the JWKS");

    // PKCE is required: an authorization request without a challenge goes back with an error.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let url = format!(
        "{issuer}/auth?client_id={CLIENT_ID}&response_type=code&scope=openid&redirect_uri={}&state=s",
        percent_encode(&redirect_uri)
    );
    let answer = agent.get(&url).call().unwrap();
    let location = answer.header("location").unwrap_or_default().to_owned();
    assert!(location.starts_with(&redirect_uri), "{location}");
    assert!(location.contains("error=invalid_request"), "{location}");
}

/// The whole sign-in, as the console will do it, for the given token endpoint client auth.
fn sign_in_flow(token_auth: TokenAuth) {
    let (redirect_uri, callbacks) = redirect_target();
    let provider = start(&redirect_uri, token_auth);
    let discovery = get_json(&provider.discovery_url());
    let browser =
        Browser::start().unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"));

    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge =
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    let auth = format!(
        "{}?client_id={CLIENT_ID}&response_type=code&scope={}&redirect_uri={}&state={state}\
         &nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        discovery["authorization_endpoint"].as_str().unwrap(),
        percent_encode("openid email profile"),
        percent_encode(&redirect_uri),
    );
    browser.goto(&auth).unwrap();
    browser.wait_for(LOGIN_FORM, WAIT).unwrap();
    // Kept for a person to look at: target/tmp/oidc-login-form.png.
    browser.screenshot(format!("{}/oidc-login-form.png", env!("CARGO_TARGET_TMPDIR"))).unwrap();

    // A wrong password: the form again, saying so, and nothing sent to the client.
    oidc::sign_in(&browser, "alice", "wrong horse").unwrap();
    let error = browser.wait_for(LOGIN_ERROR, WAIT).unwrap();
    assert!(error.text().unwrap().contains("Wrong login or password"));
    assert!(callbacks.try_recv().is_err(), "a wrong password reached the client");
    // An unknown login likewise.
    oidc::sign_in(&browser, "mallory", "correct horse").unwrap();
    browser.wait_for(LOGIN_ERROR, WAIT).unwrap();
    assert!(callbacks.try_recv().is_err(), "an unknown login reached the client");

    oidc::sign_in(&browser, "alice", "correct horse").unwrap();
    let callback = callbacks.recv_timeout(WAIT).expect("the browser back at the redirect_uri");
    assert_eq!(callback.get("state"), Some(&state), "{callback:?}");
    assert_eq!(callback.get("iss"), Some(&provider.issuer()), "{callback:?}");
    let code = callback.get("code").expect("a code").clone();
    browser.wait_for("#done", WAIT).unwrap();
    assert!(browser.current_url().unwrap().starts_with(&redirect_uri));

    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let (status, tokens) = exchange(token_endpoint, token_auth, &code, &redirect_uri, &verifier);
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {id_token}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "rearview-test");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], provider.issuer().as_str(), "{claims}");
    assert_eq!(claims["sub"], "sub-alice-1", "{claims}");
    assert_eq!(claims["email"], "alice@example.test", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    assert_eq!(claims["aud"], CLIENT_ID, "{claims}");
    assert_eq!(claims["nonce"], nonce.as_str(), "{claims}");

    // The code is spent: a second exchange is refused.
    let (status, again) = exchange(token_endpoint, token_auth, &code, &redirect_uri, &verifier);
    assert_eq!((status, &again["error"]), (400, &Value::from("invalid_grant")), "{again}");
}

/// The code exchange at the token endpoint, the client authenticating as `token_auth` says.
fn exchange(
    token_endpoint: &str,
    token_auth: TokenAuth,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let mut request = ureq::post(token_endpoint);
    match token_auth {
        TokenAuth::ClientSecretBasic => request = request.set("Authorization", &basic_auth()),
        TokenAuth::ClientSecretPost => {
            form.push(("client_id", CLIENT_ID));
            form.push(("client_secret", CLIENT_SECRET));
        }
    }
    match request.send_form(&form) {
        Ok(r) => (r.status(), r.into_json().expect("a JSON answer")),
        Err(ureq::Error::Status(status, r)) => (status, r.into_json().expect("a JSON error")),
        Err(e) => panic!("POST {token_endpoint}: {e}"),
    }
}

#[test]
fn sign_in_with_pkce_and_client_secret_basic() {
    sign_in_flow(TokenAuth::ClientSecretBasic);
}

#[test]
fn sign_in_with_pkce_and_client_secret_post() {
    sign_in_flow(TokenAuth::ClientSecretPost);
}
