//! A device's push stream read as raw server-sent events, for the tests that watch what a
//! stream sends (`replicas.rs`, `failures.rs`).

use std::time::Duration;

/// A device's push stream: the events it has read so far.
pub struct Stream {
    events: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens device `token`'s push stream at `url`; each event arrives as (event, id).
pub async fn stream(url: &str, token: &str) -> Stream {
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/device/stream"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut r = r;
        let mut text = String::new();
        while let Ok(Some(chunk)) = r.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                        .unwrap_or_default()
                };
                let _ = tx.send((field("event:"), field("id:")));
            }
        }
    });
    Stream { events, task }
}

impl Stream {
    /// Waits until a `trigger` event with `id` arrives; every trigger id read meanwhile.
    pub async fn until_trigger(&mut self, id: &str, limit: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let end = tokio::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((event, got))) => {
                    if event == "trigger" {
                        seen.push(got.clone());
                        if got == id {
                            return seen;
                        }
                    }
                }
                Ok(None) => panic!("the stream ended before trigger {id}; read {seen:?}"),
                Err(_) => panic!("trigger {id} did not arrive within {limit:?}; read {seen:?}"),
            }
        }
    }

    /// The trigger ids that arrive within `quiet`.
    pub async fn triggers_within(&mut self, quiet: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(Some((event, id))) = tokio::time::timeout(quiet, self.events.recv()).await {
            if event == "trigger" {
                seen.push(id);
            }
        }
        seen
    }
}
