//! What the console's test binaries share: a tenant initialised in a temp directory and served
//! on a free loopback port.

#![allow(dead_code)]

use rearview_console::{Server, ServerConfig, ServerHandle};

/// `init` of tenant `tenant-a` (first admin `ivan`) and `serve` on 127.0.0.1:0; returns the
/// directory (keep it alive), the server and the admin token.
pub async fn start() -> (tempfile::TempDir, ServerHandle, String) {
    start_with(|_| {}).await
}

/// The same, serving with the default configuration changed by `adjust`.
pub async fn start_with(
    adjust: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, ServerHandle, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = rearview_console::init(dir.path(), "tenant-a", "ivan").unwrap();
    let mut config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    adjust(&mut config);
    let server = Server::start(config).await.unwrap();
    (dir, server, out.admin_token)
}
