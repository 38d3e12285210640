//! What the console's test binaries share: a tenant initialised in a temp directory and served
//! on a free loopback port.

use rearview_console::{Server, ServerConfig, ServerHandle};

/// `init` of tenant `tenant-a` (first admin `ivan`) and `serve` on 127.0.0.1:0; returns the
/// directory (keep it alive), the server and the admin token.
pub async fn start() -> (tempfile::TempDir, ServerHandle, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = rearview_console::init(dir.path(), "tenant-a", "ivan").unwrap();
    let server = Server::start(ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    (dir, server, out.admin_token)
}
