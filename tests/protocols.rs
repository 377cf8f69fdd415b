//! End-to-end: the application protocol of real connections between real
//! clients and servers (curl, and the `peers` binary: hyper, tokio-tungstenite,
//! h2, rustls), as both the client's and the server's record report it.
//!
//! tx/rx and local/remote are each socket's own point of view: what the
//! client's record counts as sent, the server's counts as received.
mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// The client's and the server's record of the one connection to `port`.
fn pair(records: &[Value], port: u16) -> (&Value, &Value) {
    let conns = of_type(records, "connection");
    assert_eq!(conns.len(), 2, "one connection, two sockets: {conns:#?}");
    let c = *conns
        .iter()
        .find(|r| r["role"] == "client" && r["rport"] == port)
        .unwrap_or_else(|| panic!("no client record to {port}: {conns:#?}"));
    let s = *conns
        .iter()
        .find(|r| r["role"] == "server" && r["lport"] == port)
        .unwrap_or_else(|| panic!("no server record on {port}: {conns:#?}"));
    assert_eq!(c["lport"], s["rport"], "not the same connection: {c} {s}");
    (c, s)
}

/// An HTTP/1.x request as the `http` object lists it, less `ttfb_us`.
fn req(method: &str, path: &str, version: &str, status: Option<u16>, keep_alive: bool) -> Value {
    json!({"method": method, "path": path, "version": version, "status": status, "keep_alive": keep_alive})
}

/// Asserts a record's `http` object: exactly these requests, none omitted.
/// `ttfb_us` is a positive number for an answered request, null otherwise.
fn assert_http(r: &Value, want: &[Value]) {
    let http = r["http"].as_object().unwrap_or_else(|| panic!("no http object in {r}"));
    let mut keys: Vec<&str> = http.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["omitted", "requests"], "{r}");
    assert_eq!(http["omitted"], 0, "{r}");
    let got: Vec<Value> = http["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no requests in {r}"))
        .iter()
        .map(|q| {
            let mut q = q.clone();
            let ttfb = q.as_object_mut().unwrap().remove("ttfb_us");
            match (&q["status"], ttfb) {
                (Value::Null, Some(Value::Null)) => {}
                (Value::Null, t) => panic!("ttfb {t:?} without a response in {r}"),
                (_, Some(Value::Number(n))) => assert!(n.as_f64().unwrap() > 0.0, "ttfb {n} in {r}"),
                (_, t) => panic!("ttfb {t:?} of an answered request in {r}"),
            }
            q
        })
        .collect();
    assert_eq!(got, want, "requests of {r}");
}

/// Asserts that the protocol objects not named are absent.
fn only(r: &Value, protocol: &str, objects: &[&str]) {
    assert_eq!(r["protocol"], protocol, "{r}");
    for key in ["http", "websocket", "http2", "tls"] {
        assert_eq!(
            r.get(key).is_some(),
            objects.contains(&key),
            "{key} should be {} in {r}",
            if objects.contains(&key) { "present" } else { "absent" }
        );
    }
}

/// A `http2` object, its requests in stream order.
fn http2_of(r: &Value) -> Value {
    let mut h2 = r["http2"].clone();
    if let Some(reqs) = h2["requests"].as_array_mut() {
        reqs.sort_by_key(|q| q["stream"].as_u64());
    }
    let frames = h2.as_object_mut().and_then(|o| o.remove("frames"));
    assert_h2_frames(r, &h2, frames.as_ref().unwrap_or_else(|| panic!("no frames in {r}")));
    h2
}

/// Frame counts by type, from this socket's side: every request answered by
/// one HEADERS frame, every request but an h2c upgrade's sent as one, and
/// SETTINGS both ways. Encrypted (`alpn`) frames are not counted.
fn assert_h2_frames(r: &Value, h2: &Value, frames: &Value) {
    if h2["mode"] == "alpn" {
        assert_eq!(frames, &Value::Null, "{r}");
        return;
    }
    let (client, server) = if r["role"] == "client" {
        ("tx", "rx")
    } else {
        ("rx", "tx")
    };
    for dir in ["tx", "rx"] {
        let names: Vec<&str> = frames[dir].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names.len(), 11, "{r}");
        assert!(frames[dir]["SETTINGS"].as_u64().unwrap() >= 1, "{r}");
    }
    let requests = h2["requests"].as_array().unwrap().len() as u64;
    let upgraded = u64::from(h2["mode"] == "h2c-upgrade");
    assert_eq!(frames[client]["HEADERS"], requests - upgraded, "{r}");
    assert_eq!(frames[server]["HEADERS"], requests, "{r}");
}

fn curl(args: &[&str]) -> String {
    run_to_end(Command::new("curl").args(["-s", "--max-time", "10"]).args(args), 20)
}

fn start(port: u16, extra: &[&str]) -> Tracer {
    let port = port.to_string();
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

// ---------------------------------------------------------------- HTTP/1.x

const BIG_BODY: usize = 32 << 20;

/// A keep-alive server: a 32 MiB body, then a 404 on the same connection.
fn serve_big_then_small(listener: std::net::TcpListener) {
    use std::io::{BufRead, BufReader, Write};
    let (s, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for (head, body) in [
        (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG_BODY}\r\n\r\n"),
            BIG_BODY,
        ),
        ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(), 0),
    ] {
        // The request head ends with an empty line.
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(&vec![b'x'; body]).unwrap();
    }
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// The kernel ships the response head, skips the 32 MiB body (userspace
/// told it where the next response starts), and ships that next head.
#[test]
fn a_large_body_is_skipped_and_the_next_request_still_seen() {
    let port = free_port();
    let tracer = start(port, &[]);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let server = thread::spawn(move || serve_big_then_small(listener));
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let out = run_to_end(
        Command::new("curl").args(["-s", "-o", "/dev/null", &url("/big"), &url("/after")]),
        30,
    );
    assert_eq!(out, "");
    server.join().unwrap();
    let records = tracer.stop();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(
            r,
            &[
                req("GET", "/big", "HTTP/1.1", Some(200), true),
                req("GET", "/after", "HTTP/1.1", Some(404), true),
            ],
        );
    }
    let ring = summary(&records)["ring_bytes"].as_u64().unwrap();
    assert!(ring < 256 << 10, "{ring} ring bytes for a {BIG_BODY}-byte body");
    assert_eq!(summary(&records)["payload_gaps"], 0);
}

#[test]
fn http10_request_without_keep_alive() {
    let port = free_port();
    let tracer = start(port, &[]);
    let server = PeerServer::start(&["http-server", "--addr", &format!("127.0.0.1:{port}")], None);
    assert_eq!(server.port, port);
    let body = curl(&["-0", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(body, "hello");
    let records = tracer.stop();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.0", &["http"]);
        assert_http(r, &[req("GET", "/", "HTTP/1.0", Some(200), false)]);
    }
}

fn http_keep_alive(host: &str, netns: Option<&NetNs>) {
    let port = free_port();
    let tracer = start(port, &[]);
    let server = PeerServer::start(&["http-server", "--addr", &format!("{host}:{port}")], netns);
    let url = |path: &str| format!("http://{host}:{port}{path}");
    // One curl, three URLs: one kept-alive connection.
    let bodies = curl(&[&url("/"), &url("/missing"), &url("/")]);
    assert_eq!(bodies, "hello\nnot found\nhello");
    let records = tracer.stop();
    drop(server);
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(
            r,
            &[
                req("GET", "/", "HTTP/1.1", Some(200), true),
                req("GET", "/missing", "HTTP/1.1", Some(404), true),
                req("GET", "/", "HTTP/1.1", Some(200), true),
            ],
        );
    }
}

#[test]
fn http11_keep_alive_three_requests_on_one_connection() {
    http_keep_alive("127.0.0.1", None);
}

#[test]
fn http11_keep_alive_across_namespaces() {
    let ns = NetNs::new();
    http_keep_alive(&ns.ns_v4.clone(), Some(&ns));
}

/// A chunked response (three chunks sent apart), then another request on the
/// same connection: the chunked body must end where its last chunk does.
#[test]
fn http11_chunked_response_then_another_request() {
    let port = free_port();
    let tracer = start(port, &[]);
    let _server = PeerServer::start(&["http-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let bodies = curl(&[
        &format!("http://127.0.0.1:{port}/chunked"),
        &format!("http://127.0.0.1:{port}/missing"),
    ]);
    assert_eq!(bodies, "chunk one\nchunk two\nchunk three\nnot found");
    let records = tracer.stop();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(
            r,
            &[
                req("GET", "/chunked", "HTTP/1.1", Some(200), true),
                req("GET", "/missing", "HTTP/1.1", Some(404), true),
            ],
        );
    }
}

/// HEAD responses carry Content-Length but no body: each next response
/// starts right after the previous one's headers.
#[test]
fn http11_head_requests_have_no_body() {
    let port = free_port();
    let tracer = start(port, &[]);
    let _server = PeerServer::start(&["http-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let heads = curl(&[
        "-I",
        &format!("http://127.0.0.1:{port}/"),
        &format!("http://127.0.0.1:{port}/chunked"),
        &format!("http://127.0.0.1:{port}/missing"),
    ]);
    assert_eq!(heads.matches("HTTP/1.1 ").count(), 3, "{heads}");
    let records = tracer.stop();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(
            r,
            &[
                req("HEAD", "/", "HTTP/1.1", Some(200), true),
                req("HEAD", "/chunked", "HTTP/1.1", Some(200), true),
                req("HEAD", "/missing", "HTTP/1.1", Some(404), true),
            ],
        );
    }
}

/// The tracer's whole stdout and stderr (`RUST_LOG` as given) while `traffic`
/// runs. The tracer is killed if the test fails on the way.
fn whole_output(args: &[&str], rust_log: Option<&str>, traffic: impl FnOnce()) -> (String, String) {
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut cmd = Command::new(TRACER);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = Guard(cmd.spawn().expect("start tracer"));
    let (out, out_reader) = collect_lines(child.0.stdout.take().unwrap());
    let (err, err_reader) = collect_lines(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !err
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("tracing TCP connections"))
    {
        assert!(
            Instant::now() < deadline && child.0.try_wait().unwrap().is_none(),
            "tracer did not start: {:?}",
            err.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
    traffic();
    thread::sleep(Duration::from_millis(100));
    signal(child.0.id(), libc::SIGINT);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "tracer exited with {status}");
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let out = out.lock().unwrap().join("\n");
    let err = err.lock().unwrap().join("\n");
    (out, err)
}

fn secret_request(port: u16) {
    curl(&[
        "-o",
        "/dev/null",
        "-H",
        "Authorization: Bearer S3CRET-A",
        "-H",
        "Cookie: sid=S3CRET-C",
        &format!("http://127.0.0.1:{port}/?token=S3CRET-Q"),
    ]);
}

/// Headers never reach the output, and query strings are redacted unless
/// `--no-redact`: in JSON with every event, and in text with diagrams and the
/// tracer's own debug log.
#[test]
fn http_secrets_never_reach_the_output() {
    let port = free_port();
    let _server = PeerServer::start(&["http-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let p = port.to_string();
    let (json_out, json_err) = whole_output(&["--json", "--events", "--port", &p], None, || secret_request(port));
    let (text_out, text_err) = whole_output(&["--diagram", "--port", &p], Some("debug"), || secret_request(port));
    for (what, text) in [
        ("JSON stdout", &json_out),
        ("JSON stderr", &json_err),
        ("text stdout", &text_out),
        ("debug stderr", &text_err),
    ] {
        assert!(!text.contains("S3CRET"), "a secret in the tracer's {what}:\n{text}");
    }
    let records: Vec<Value> = json_out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(r, &[req("GET", "/?<redacted>", "HTTP/1.1", Some(200), true)]);
    }
}

#[test]
fn no_redact_shows_the_query_but_never_headers() {
    let port = free_port();
    let _server = PeerServer::start(&["http-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let (out, err) = whole_output(&["--json", "--no-redact", "--port", &port.to_string()], None, || {
        secret_request(port)
    });
    for secret in ["S3CRET-A", "S3CRET-C"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} in\n{out}\n{err}"
        );
    }
    let records: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/1.1", &["http"]);
        assert_http(r, &[req("GET", "/?token=S3CRET-Q", "HTTP/1.1", Some(200), true)]);
    }
}

// ---------------------------------------------------------------- WebSocket

fn frames(text: u64, binary: u64, ping: u64, pong: u64, close: u64) -> Value {
    json!({"text": text, "binary": binary, "ping": ping, "pong": pong, "close": close, "continuation": 0})
}

/// What the client sends (tokio-tungstenite, each frame in its own segment):
/// ping, text "hello", binary [1,2,3]; the server answers pong, text, binary.
/// tungstenite answers a close with a close repeating its code and reason.
fn websocket(host: &str, netns: Option<&NetNs>, server_closes: bool, subprotocol: Option<&str>, path: &str) {
    let port = free_port();
    let tracer = start(port, &[]);
    let addr = format!("{host}:{port}");
    let mut server_args = vec!["ws-server", "--addr", &addr];
    if server_closes {
        server_args.push("--close-first");
    }
    let server = PeerServer::start(&server_args, netns);
    let url = format!("ws://{addr}{path}");
    let mut client_args = vec!["ws-client", "--url", &url];
    if let Some(p) = subprotocol {
        client_args.extend(["--protocol", p]);
    }
    if server_closes {
        client_args.push("--wait-close");
    }
    let said = run_peer(&client_args);
    let reason = if server_closes { "server done" } else { "bye" };
    assert!(said.contains(&format!("close 1000 {reason}")), "{said}");
    assert!(said.contains("echoes text true binary true pong true"), "{said}");
    let records = tracer.stop();
    drop(server);
    let (c, s) = pair(&records, port);
    let client_tx = frames(1, 1, 1, 0, 1);
    let server_tx = frames(1, 1, 0, 1, 1);
    let (client_init, server_init) = if server_closes {
        ("remote", "local")
    } else {
        ("local", "remote")
    };
    let redacted = path
        .split_once('?')
        .map_or(path.to_string(), |(p, _)| format!("{p}?<redacted>"));
    for (r, tx, rx, initiator) in [
        (c, &client_tx, &server_tx, client_init),
        (s, &server_tx, &client_tx, server_init),
    ] {
        only(r, "websocket", &["http", "websocket"]);
        assert_http(r, &[req("GET", &redacted, "HTTP/1.1", Some(101), true)]);
        assert_eq!(
            r["websocket"],
            json!({
                "key_ok": true,
                "subprotocol": subprotocol,
                "frames": {"tx": tx, "rx": rx},
                "close_code": 1000,
                "close_reason": reason,
                "close_initiator": initiator,
                "tcp_closed_after": true,
            }),
            "{r}"
        );
    }
}

#[test]
fn websocket_echo_and_the_client_closes() {
    websocket("127.0.0.1", None, false, Some("chat"), "/chat");
}

#[test]
fn websocket_echo_and_the_server_closes_first() {
    websocket("127.0.0.1", None, true, Some("chat"), "/chat?room=1");
}

#[test]
fn websocket_across_namespaces() {
    let ns = NetNs::new();
    websocket(&ns.ns_v4.clone(), Some(&ns), false, None, "/socket");
}

// ---------------------------------------------------------------- HTTP/2

fn h2(stream: u32, path: &str, status: u16) -> Value {
    json!({"stream": stream, "method": "GET", "path": path, "status": status})
}

#[test]
fn h2_prior_knowledge_three_streams() {
    let port = free_port();
    let tracer = start(port, &[]);
    let _server = PeerServer::start(&["h2-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let said = run_peer(&[
        "h2-client",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--paths",
        "/,/missing,/x?q=1",
    ]);
    assert_eq!(
        said,
        "stream 1 / 200 6\nstream 3 /missing 404 10\nstream 5 /x?q=1 200 6"
    );
    let records = tracer.stop();
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/2", &["http2"]);
        assert_eq!(
            http2_of(r),
            json!({
                "mode": "prior-knowledge",
                "streams": 3,
                "requests": [h2(1, "/", 200), h2(3, "/missing", 404), h2(5, "/x?<redacted>", 200)],
                "omitted": 0,
                "headers_readable": true,
            }),
            "{r}"
        );
    }
}

/// h2c upgrade: the HTTP/1.1 request answered 101 is stream 1, answered over
/// HTTP/2; the other streams follow on the same connection.
fn assert_h2c(records: &[Value], port: u16, streams: &[Value]) {
    let (c, s) = pair(records, port);
    for r in [c, s] {
        only(r, "http/2", &["http", "http2"]);
        assert_http(r, &[req("GET", "/", "HTTP/1.1", Some(101), true)]);
        assert_eq!(
            http2_of(r),
            json!({
                "mode": "h2c-upgrade",
                "streams": streams.len(),
                "requests": streams,
                "omitted": 0,
                "headers_readable": true,
            }),
            "{r}"
        );
    }
}

/// The peers' client: streams 3 and 5 sent at once, right after the preface.
#[test]
fn h2c_upgrade_then_concurrent_streams() {
    let port = free_port();
    let tracer = start(port, &[]);
    let _server = PeerServer::start(&["h2-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let said = run_peer(&[
        "h2-client",
        "--upgrade",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--paths",
        "/,/missing,/x",
    ]);
    assert!(
        said.ends_with("stream 1 / 200 6\nstream 3 /missing 404 10\nstream 5 /x 200 6"),
        "{said}"
    );
    let records = tracer.stop();
    assert_h2c(
        &records,
        port,
        &[h2(1, "/", 200), h2(3, "/missing", 404), h2(5, "/x", 200)],
    );
}

/// curl: the upgrade, then one stream after another on the same connection.
#[test]
fn h2c_upgrade_by_curl() {
    let port = free_port();
    let tracer = start(port, &[]);
    let _server = PeerServer::start(&["h2-server", "--addr", &format!("127.0.0.1:{port}")], None);
    let bodies = curl(&[
        "--http2",
        &format!("http://127.0.0.1:{port}/"),
        &format!("http://127.0.0.1:{port}/missing"),
        &format!("http://127.0.0.1:{port}/y"),
    ]);
    assert_eq!(bodies, "hello\nnot found\nhello");
    let records = tracer.stop();
    assert_h2c(
        &records,
        port,
        &[h2(1, "/", 200), h2(3, "/missing", 404), h2(5, "/y", 200)],
    );
}

// ---------------------------------------------------------------- TLS

/// A rustls handshake, a few bytes each way, close_notify both ways.
fn tls(server_alpn: &str, client_alpn: &str, tls12: bool) -> (Vec<Value>, u16, String) {
    let port = free_port();
    let tracer = start(port, &[]);
    let addr = format!("127.0.0.1:{port}");
    let mut server_args = vec!["tls-server", "--addr", &addr, "--alpn", server_alpn];
    let mut client_args = vec![
        "tls-client",
        "--addr",
        &addr,
        "--sni",
        "tracer.test",
        "--alpn",
        client_alpn,
    ];
    if tls12 {
        server_args.push("--tls12");
        client_args.push("--tls12");
    }
    let _server = PeerServer::start(&server_args, None);
    let said = run_peer(&client_args);
    let records = tracer.stop();
    (records, port, said)
}

/// TLS 1.3 encrypts the server's ALPN choice: the connection stays `tls`.
#[test]
fn tls13_with_sni_and_alpn_is_tls() {
    let (records, port, said) = tls("h2,http/1.1", "h2,http/1.1", false);
    assert!(said.starts_with("version 1.3 alpn h2\n"), "{said}");
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "tls", &["tls"]);
        assert_eq!(
            r["tls"],
            json!({"version": "1.3", "sni": "tracer.test", "alpn": ["h2", "http/1.1"], "alpn_selected": null}),
            "{r}"
        );
    }
}

/// TLS 1.2 shows the server's ALPN choice in clear: h2 makes it HTTP/2,
/// whose frames are encrypted (how many streams is unknown: null).
#[test]
fn tls12_with_alpn_h2_is_http2() {
    let (records, port, said) = tls("h2,http/1.1", "h2,http/1.1", true);
    assert!(said.starts_with("version 1.2 alpn h2\n"), "{said}");
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "http/2", &["http2", "tls"]);
        assert_eq!(
            r["tls"],
            json!({"version": "1.2", "sni": "tracer.test", "alpn": ["h2", "http/1.1"], "alpn_selected": "h2"}),
            "{r}"
        );
        assert_eq!(
            r["http2"],
            json!({"mode": "alpn", "frames": null, "streams": null, "requests": [], "omitted": 0, "headers_readable": false}),
            "{r}"
        );
    }
}

#[test]
fn tls12_with_alpn_http11_stays_tls() {
    let (records, port, said) = tls("h2,http/1.1", "http/1.1", true);
    assert!(said.starts_with("version 1.2 alpn http/1.1\n"), "{said}");
    let (c, s) = pair(&records, port);
    for r in [c, s] {
        only(r, "tls", &["tls"]);
        assert_eq!(
            r["tls"],
            json!({"version": "1.2", "sni": "tracer.test", "alpn": ["http/1.1"], "alpn_selected": "http/1.1"}),
            "{r}"
        );
    }
}
