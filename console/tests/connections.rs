//! Connection bounds of the real console on 127.0.0.1, tested with raw TCP clients: requests
//! whose head never completes are closed after the header timeout, a stalled body after the
//! idle timeout, connections beyond the cap are refused (push streams count), and push
//! streams stay open past the idle timeout because they ping.
//!
//! The waits below are generous upper bounds for "closed at all"; no test asserts how fast.

use std::time::Duration;

use rearview_console::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// Longest a test waits for the console to close a connection it should close.
const GENEROUS: Duration = Duration::from_secs(20);

/// Whether the console closed `conn` (end of stream or reset) within `GENEROUS`, reading and
/// discarding whatever it sends first.
async fn closed_by_console(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + GENEROUS;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One complete `GET /healthz`; the status line, or what went wrong.
async fn healthz(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: console\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tokio::time::timeout(GENEROUS, conn.read_to_end(&mut answer)).await {
        Err(_) => return Err("no answer".into()),
        Ok(Err(e)) if answer.is_empty() => return Err(e.to_string()),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&answer);
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_owned()),
        _ => Err("closed without an answer".into()),
    }
}

/// A connection that sent the start of a request and nothing more.
async fn half_sent(addr: std::net::SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: console\r\n").await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_head_never_completes_are_closed_after_the_header_timeout() {
    let (_dir, server, _) = support::start_configured("approver", |c| {
        c.header_read_timeout = Duration::from_secs(1);
        // Far longer than the header timeout: what closes these is the header timeout.
        c.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let addr = server.addr();
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(half_sent(addr).await);
    }
    // A client that trickles its head byte by byte is never idle, and still closed.
    let trickler = tokio::spawn(async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let deadline = tokio::time::Instant::now() + GENEROUS;
        for b in b"GET /healthz HTTP/1.1\r\nHost: console\r\nX-Slow: "
            .iter()
            .chain([b'a'; 512].iter())
            .cycle()
        {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            if conn.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!("cycle never ends")
    });
    for (i, conn) in conns.iter_mut().enumerate() {
        assert!(closed_by_console(conn).await, "half-sent request {i} still open");
    }
    assert!(trickler.await.unwrap(), "a head trickled byte by byte is still being read");
    assert!(eventually_served(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_closed_after_the_idle_timeout() {
    let (_dir, server, _) = support::start_configured("approver", |c| {
        c.header_read_timeout = Duration::from_secs(600);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut conn = TcpStream::connect(server.addr()).await.unwrap();
    conn.write_all(
        b"POST /api/v1/enroll HTTP/1.1\r\nHost: console\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"token\": \"",
    )
    .await
    .unwrap();
    assert!(closed_by_console(&mut conn).await, "a body that stopped half-way is still open");
    assert!(eventually_served(server.addr()).await);
}

/// A device's push stream, opened by hand: the answer's head has been read.
async fn push_stream(addr: std::net::SocketAddr, token: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/device/stream HTTP/1.1\r\nHost: console\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(GENEROUS, conn.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    conn
}

/// Reads `conn` for `span`; returns how many pings arrived, or `None` if it closed.
async fn pings_during(conn: &mut TcpStream, span: Duration) -> Option<usize> {
    let mut text = String::new();
    let until = tokio::time::Instant::now() + span;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, conn.read(&mut buf)).await {
            Err(_) => return Some(text.matches("event: ping").count()),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// Whether a normal request is served within `GENEROUS` (trying again while refused).
async fn eventually_served(addr: std::net::SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + GENEROUS;
    while tokio::time::Instant::now() < deadline {
        if healthz(addr).await.is_ok_and(|line| line.starts_with("HTTP/1.1 200")) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_push_streams_count_and_stay_open() {
    // Enroll a device on a console with default bounds, then serve the same data with a cap
    // of 3 and nobody else connected.
    let (dir, server, admin_token) = support::start().await;
    let admin =
        rearview_console::client::AdminClient::new(&server.url(), &admin_token, None).unwrap();
    let (token, _) = support::enroll(&server.url(), &admin).await;
    server.shutdown().await.unwrap();
    let token = token.as_str();
    let idle = Duration::from_secs(2);
    let mut config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.header_read_timeout = Duration::from_secs(600);
    config.idle_timeout = idle;
    config.max_connections = 3;
    let server = Server::start(config).await.unwrap();
    let addr = server.addr();

    // The request still being sent connects first: the server takes a connection's permit in a
    // task of its own, so only a connection answered since is surely counted after it.
    let held = half_sent(addr).await;
    let mut streams = vec![push_stream(addr, token).await, push_stream(addr, token).await];
    // Three open: two push streams and a request still being sent. A fourth is refused.
    let refused = healthz(addr).await;
    assert!(
        !refused.as_ref().is_ok_and(|line| line.starts_with("HTTP/1.1 200")),
        "a connection beyond the cap was served: {refused:?}"
    );
    // The push streams outlive several idle timeouts: they ping.
    for s in &mut streams {
        let pings = pings_during(s, idle * 3).await;
        assert!(pings.is_some_and(|n| n >= 2), "push stream closed or silent: {pings:?}");
    }
    drop(held);
    assert!(eventually_served(addr).await, "still refused after a connection closed");
    for s in &mut streams {
        assert!(pings_during(s, Duration::from_millis(200)).await.is_some(), "stream closed");
    }
}
