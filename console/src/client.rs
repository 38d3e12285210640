//! A small client for the people side of the API (what the CLI, the demo and tests use).

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use rearview_protocol::ErrorBody;

use crate::api::page::{MAX_LIMIT, NEXT_CURSOR};

/// A failed API call: the HTTP status (0 when the console was not reached) and its message.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *status == 0 { format!("console not reached: {message}") } else { format!("console answered {status}: {message}") })]
pub struct ClientError {
    pub status: u16,
    pub message: String,
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl AdminClient {
    /// `ca_cert`: PEM to trust besides the system roots (a self-signed console).
    pub fn new(
        base: &str,
        token: &str,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<AdminClient, ClientError> {
        let mut b =
            reqwest::Client::builder().use_rustls_tls().timeout(std::time::Duration::from_secs(60));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| ClientError {
                status: 0,
                message: format!("CA file {}: {e}", path.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError {
                status: 0,
                message: format!("CA file {}: {e}", path.display()),
            })?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| ClientError { status: 0, message: e.to_string() })?;
        Ok(AdminClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Makes one call; the parsed answer and the next page's cursor, if the answer names one.
    async fn call_paged<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(T, Option<String>), ClientError> {
        let mut r =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = r.send().await.map_err(|e| ClientError { status: 0, message: e.to_string() })?;
        let status = resp.status();
        let next = resp.headers().get(NEXT_CURSOR).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text =
            resp.text().await.map_err(|e| ClientError { status: 0, message: e.to_string() })?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error).unwrap_or(text);
            return Err(ClientError { status: status.as_u16(), message });
        }
        let text = if text.is_empty() { "null".to_owned() } else { text };
        let value = serde_json::from_str(&text).map_err(|e| ClientError {
            status: status.as_u16(),
            message: format!("unexpected answer: {e}"),
        })?;
        Ok((value, next))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        self.call_paged(method, path, body).await.map(|(v, _)| v)
    }

    /// One answer; for a list, its first page only (see [`AdminClient::get_all`]).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// Every item of a list, following its pages' cursors (`crate::api::page`).
    pub async fn get_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page_path = match &after {
                Some(a) => format!("{path}{sep}limit={MAX_LIMIT}&after={a}"),
                None => format!("{path}{sep}limit={MAX_LIMIT}"),
            };
            let (page, next): (Vec<T>, _) = self.call_paged(Method::GET, &page_path, None).await?;
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(to_json(body)?)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(to_json(body)?)).await
    }
}

fn to_json<B: Serialize>(body: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError { status: 0, message: format!("request body: {e}") })
}
