//! The HTTP client for the device endpoints of [`rearview_protocol`].

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::UploadError;
use rearview_protocol::{
    paths, ActivityAck, ActivityBatch, ClipManifest, ClipStatus, EnrollRequest, EnrollResponse,
    ErrorBody, HealthReport, PolicyMessage, SegmentAck,
};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://console.example:8443` (no trailing path).
    pub server: String,
    /// PEM file of a CA (or the console's self-signed certificate) to trust besides the
    /// system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Timeout of one ordinary request (not of the push stream).
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn new(server: impl Into<String>) -> ClientConfig {
        ClientConfig {
            server: server.into(),
            ca_cert: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A device's connection to the console. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For the push stream: no overall timeout, it is meant to stay open.
    stream_http: reqwest::Client,
    /// For doctor's clock probe: a connection of its own each time (no pool), so it measures
    /// the console as a new connection finds it and never waits behind other requests.
    probe_http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// How long opening the push stream may take.
    open_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn builder(config: &ClientConfig) -> Result<reqwest::ClientBuilder, UploadError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30));
    if let Some(ca) = &config.ca_cert {
        let pem = std::fs::read(ca)
            .map_err(|e| UploadError::Config(format!("CA file {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            UploadError::Config(format!("CA file {} is not PEM: {e}", ca.display()))
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

impl Client {
    pub fn new(config: &ClientConfig, token: Option<String>) -> Result<Client, UploadError> {
        let base = config.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(UploadError::Config(format!(
                "server {base:?} must start with https:// (or http:// on loopback)"
            )));
        }
        let http = builder(config)?
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| UploadError::Config(e.to_string()))?;
        let stream_http =
            builder(config)?.build().map_err(|e| UploadError::Config(e.to_string()))?;
        let probe_http = builder(config)?
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| UploadError::Config(e.to_string()))?;
        Ok(Client {
            http,
            stream_http,
            probe_http,
            base,
            token,
            open_timeout: config.request_timeout,
        })
    }

    pub fn with_token(&self, token: String) -> Client {
        Client { token: Some(token), ..self.clone() }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(r: reqwest::RequestBuilder) -> Result<T, UploadError> {
        let resp = check(r.send().await?).await?;
        // A body cut short is a transport failure (retryable, via `From<reqwest::Error>`);
        // only a whole body that is not the expected JSON is a protocol error.
        let body = resp.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| {
            UploadError::Protocol(format!(
                "answer is not the expected JSON ({e}): {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }

    async fn send_empty(r: reqwest::RequestBuilder) -> Result<(), UploadError> {
        check(r.send().await?).await.map(|_| ())
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, UploadError> {
        Self::send(self.request(method, path).json(body)).await
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, UploadError> {
        self.json(Method::POST, paths::ENROLL, req).await
    }

    pub async fn policy(&self) -> Result<PolicyMessage, UploadError> {
        Self::send(self.request(Method::GET, paths::POLICY)).await
    }

    pub async fn ack_trigger(&self, trigger_id: &str) -> Result<(), UploadError> {
        Self::send_empty(self.request(Method::POST, &paths::trigger_ack(trigger_id))).await
    }

    pub async fn put_manifest(&self, manifest: &ClipManifest) -> Result<ClipStatus, UploadError> {
        self.json(Method::PUT, &paths::clip(&manifest.clip_id), manifest).await
    }

    pub async fn clip_status(&self, clip_id: &str) -> Result<ClipStatus, UploadError> {
        Self::send(self.request(Method::GET, &paths::clip(clip_id))).await
    }

    pub async fn put_segment(
        &self,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<SegmentAck, UploadError> {
        Self::send(
            self.request(Method::PUT, &paths::segment(sha256))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        )
        .await
    }

    pub async fn health(&self, report: &HealthReport) -> Result<(), UploadError> {
        Self::send_empty(self.request(Method::POST, paths::HEALTH).json(report)).await
    }

    pub async fn activity(&self, batch: &ActivityBatch) -> Result<ActivityAck, UploadError> {
        self.json(Method::POST, paths::ACTIVITY, batch).await
    }

    /// Opens the push stream; the response body is `text/event-stream`.
    pub async fn open_stream(&self) -> Result<reqwest::Response, UploadError> {
        let mut r = self
            .stream_http
            .get(format!("{}{}", self.base, paths::STREAM))
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        // The stream has no overall timeout (it is meant to stay open), so its opening gets
        // one of its own: a console that accepts and never answers must not hold it forever.
        match tokio::time::timeout(self.open_timeout, r.send()).await {
            Ok(resp) => check(resp?).await,
            Err(_) => Err(UploadError::Unavailable(format!(
                "push stream: no answer within {} s",
                self.open_timeout.as_secs_f32()
            ))),
        }
    }

    /// The console's clock, from the `Date` header of its answer to `GET /healthz`, over the
    /// same connection settings (TLS, trusted CA) as every other request. The whole exchange
    /// is bounded by `deadline`: a console that accepts and never answers, or answers a byte
    /// at a time, costs that long and no more. `Ok(None)`: it answered without a readable
    /// `Date`.
    pub async fn server_date(
        &self,
        deadline: Duration,
    ) -> Result<Option<rearview_config::time::OffsetDateTime>, UploadError> {
        let request = self.probe_http.get(format!("{}/healthz", self.base)).timeout(deadline);
        let answer = request.send().await?;
        let date = answer.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok());
        Ok(date.and_then(parse_http_date))
    }
}

/// Turns a non-success answer into the right error.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, UploadError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error).unwrap_or(text);
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(UploadError::Unavailable(format!("{status}: {message}")))
    } else {
        Err(UploadError::Refused { status: status.as_u16(), message })
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate, `Tue, 01 Dec 2026 15:33:23 GMT`).
fn parse_http_date(text: &str) -> Option<rearview_config::time::OffsetDateTime> {
    use rearview_config::time::format_description::well_known::Rfc2822;
    rearview_config::time::OffsetDateTime::parse(text.trim(), &Rfc2822).ok()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-request HTTP server on 127.0.0.1 that answers with `head`; returns its URL.
    fn answer_once(head: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(head.as_bytes());
            }
        });
        url
    }

    #[tokio::test]
    async fn the_console_clock_is_read_from_its_date_header() {
        let url = answer_once(
            "HTTP/1.1 404 Not Found\r\nDate: Tue, 01 Dec 2026 15:33:23 GMT\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let client = Client::new(&ClientConfig::new(url), None).unwrap();
        let date = client.server_date(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(date.unix_timestamp(), 1_796_139_203);
    }

    #[tokio::test]
    async fn an_answer_without_a_date_is_none_and_a_silent_console_an_error_in_time() {
        let url =
            answer_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let client = Client::new(&ClientConfig::new(url), None).unwrap();
        assert_eq!(client.server_date(Duration::from_secs(5)).await.unwrap(), None);

        // Accepts, reads, never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(1).collect();
            std::thread::sleep(Duration::from_secs(30));
            drop(held);
        });
        let client = Client::new(&ClientConfig::new(url), None).unwrap();
        let err = client.server_date(Duration::from_millis(500)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
