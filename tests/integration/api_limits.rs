//! A server that slow or greedy clients cannot hold: a connection that dribbles its request
//! head is closed after the header-read timeout, and beyond the connection cap new clients
//! wait until a connection closes, while the server keeps answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::api::ApiServer;
use crate::common::*;

fn addr(server: &ApiServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// Sends half a request head: what a slowloris client does.
fn dribble(server: &ApiServer) -> TcpStream {
    let mut s = TcpStream::connect(addr(server)).unwrap();
    s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s
}

/// One whole request on a fresh connection; the status line, or `None` when no answer
/// came within `wait`.
fn get(server: &ApiServer, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr(server)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        _ => None,
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = TempDir::new("slowloris");
    let server = ApiServer::start_full(
        &dir.db(),
        None,
        &[],
        &["--header-read-timeout-ms", "300"],
        &[],
    );
    let mut slow = dribble(&server);
    // The server closes it (EOF or reset) well before this read gives up.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    let closed = match slow.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the half-open request was not closed");
    // Others are served meanwhile and after.
    assert_eq!(
        get(&server, Duration::from_secs(20)).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

#[test]
fn beyond_the_connection_cap_a_client_waits_until_a_connection_closes() {
    let dir = TempDir::new("conn-cap");
    let server = ApiServer::start_full(
        &dir.db(),
        None,
        &[],
        &[
            "--max-connections",
            "2",
            "--header-read-timeout-ms",
            "60000",
        ],
        &[],
    );
    let first = dribble(&server);
    let _second = dribble(&server);
    // Both slots are held: a third client is not answered...
    assert_eq!(get(&server, Duration::from_millis(700)), None);
    // ...until a slot frees up.
    drop(first);
    assert_eq!(
        get(&server, Duration::from_secs(20)).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}
