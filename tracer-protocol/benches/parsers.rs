//! The protocol parsers, one recorded exchange at a time: through
//! `Tracker::on_payload`, the daemon's path (reassembly, detection, the
//! switch on an Upgrade, the kernel instruction), and through
//! `replay::chunks`, the parser alone. The exchanges are loopback captures
//! of curl and of the `peers` servers and clients, chunked as they arrived.
use std::hint::black_box;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use tracer_protocol::{
    H2Mode, H2Request, HttpRequest, Side, Summary, Tracker, http1::Http1, http2::Http2, replay, tls::Tls,
    websocket::WebSocket,
};

/// Bytes in the order they arrived, each with the side that sent them.
type Chunks = Vec<(Side, Vec<u8>)>;

/// curl 7.88.1 with three URLs on one keep-alive connection to the `peers`
/// hyper server: `/` 200, `/api/v1/items?page=2&sort=name` 200, `/missing` 404.
fn http1_keepalive() -> Chunks {
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:44497\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
    };
    let response = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             date: Sun, 22 Nov 2026 04:57:41 GMT\r\n\r\n{body}",
            body.len()
        )
    };
    [
        (Side::Client, request("/")),
        (Side::Server, response("200 OK", "hello\n")),
        (Side::Client, request("/api/v1/items?page=2&sort=name")),
        (Side::Server, response("200 OK", "hello\n")),
        (Side::Client, request("/missing")),
        (Side::Server, response("404 Not Found", "not found\n")),
    ]
    .into_iter()
    .map(|(side, text)| (side, text.into_bytes()))
    .collect()
}

/// The `peers` tokio-tungstenite client and echo server, subprotocol `chat`:
/// the upgrade, then a ping, text "hello" and binary [1, 2, 3] from the
/// client (masked), the pong and echoes, and Close(1000, "bye") both ways.
fn websocket() -> Chunks {
    let upgrade = "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:41517\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: LwOWrKwYEH2n+zGRZ8FIAw==\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
    let switch = "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
        sec-websocket-accept: FCQysg05KdBr133MH1cehTrfUtw=\r\nsec-websocket-protocol: chat\r\n\r\n";
    let mut chunks = vec![
        (Side::Client, upgrade.as_bytes().to_vec()),
        (Side::Server, switch.as_bytes().to_vec()),
    ];
    chunks.extend(websocket_frames());
    chunks
}

fn websocket_frames() -> Chunks {
    hex_chunks(&[
        (Side::Client, "898d8d1910c5ec6b75e5f47665e5f97175b7e8"),
        (Side::Client, "8185313a9f5e595ff3325e8283c5cbadaac4c9ae"),
        (Side::Server, "8a0d61726520796f75207468657265"),
        (Side::Server, "810568656c6c6f"),
        (Side::Server, "8203010203"),
        (Side::Client, "88852394794a207c1b3346"),
        (Side::Server, "880503e8627965"),
    ])
}

/// curl 7.88.1 (nghttp2 1.52) `--http2-prior-knowledge
/// http://127.0.0.1:P/api/v1/items?page=2&sort=name` and the `peers` server
/// (h2 crate): preface, SETTINGS, WINDOW_UPDATE, then HEADERS whose path,
/// authority and user-agent are Huffman-coded; the response's content-type
/// and content-length are too.
fn http2_curl() -> Chunks {
    hex_chunks(&[
        (
            Side::Client,
            "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00001204000000000000030000006400040200000000020000\
             000000000408000000000001ff00010000360105000000018204966075998ee160c92d28ff2b1cc5805f083d8982a1d25f\
             86418b089d5c0b8170dc69969a777a8825b650c3abbcf2e153032a2f2a",
        ),
        (
            Side::Server,
            "00000004000000000000000004010000000000000e010400000001885f87497ca58ae819aa0f0d817300000600010000000168\
             656c6c6f0a",
        ),
        (Side::Client, "000000040100000000"),
    ])
}

/// The `peers` prior-knowledge client (h2 crate), three streams on one
/// connection (`/`, `/api/v1/items?page=2`, `/missing`), and the same server:
/// Huffman literals first, then the dynamic tables' entries by index.
fn http2_streams() -> Chunks {
    hex_chunks(&[
        (
            Side::Client,
            "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000000400000000000000100105000000018286418b089d5c0b\
             8170dc65a69c77840000140105000000038286be048f6075998ee160c92d28ff2b1cc5805f00000b0105000000058286be04\
             8662932106aa6f",
        ),
        (Side::Server, "000000040000000000"),
        (Side::Client, "000000040100000000"),
        (Side::Server, "000000040100000000"),
        (
            Side::Server,
            "00000e010400000001885f87497ca58ae819aa0f0d817300000600010000000168656c6c6f0a",
        ),
        (
            Side::Server,
            "00000601040000000388be0f0d817300000600010000000368656c6c6f0a",
        ),
        (
            Side::Server,
            "0000070104000000058dbe0f0d82083f00000a0001000000056e6f7420666f756e640a",
        ),
        (Side::Client, "0000080700000000000000000000000000"),
        (Side::Server, "0000080700000000000000000500000000"),
    ])
}

/// The demo's TLS 1.3 handshake, as Python's ssl module wrote it: a
/// ClientHello for demo.test offering h2 and http/1.1, then the server's first
/// flight (ServerHello, then what TLS 1.3 encrypts).
fn tls() -> Chunks {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer/src/demo/");
    let read = |name: &str| std::fs::read(format!("{demo}{name}")).unwrap_or_else(|e| panic!("{demo}{name}: {e}"));
    vec![
        (Side::Client, read("tls_client_hello.bin")),
        (Side::Server, read("tls_server_flight.bin")),
    ]
}

fn hex_chunks(chunks: &[(Side, &str)]) -> Chunks {
    chunks.iter().map(|&(side, hex)| (side, unhex(hex))).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// What the daemon does with each payload head of a flow seen from its SYNs.
fn track(chunks: &Chunks) -> Tracker {
    const ISN: [u32; 2] = [1_000_000, 7_000_000];
    let mut tracker = Tracker::new(0, ISN.map(Some));
    let mut seq = ISN.map(|isn| isn.wrapping_add(1));
    for (ts, (side, data)) in chunks.iter().enumerate() {
        let from = side.index();
        black_box(tracker.on_payload(from, seq[from], data, data.len() as u32, ts as u64));
        seq[from] = seq[from].wrapping_add(data.len() as u32);
    }
    tracker
}

fn replay<P: replay::Parser>(mut parser: P, chunks: &Chunks) -> P {
    replay::chunks(
        &mut parser,
        chunks.iter().map(|(side, data)| (*side, false, data.as_slice())),
    );
    parser
}

fn bytes(chunks: &Chunks) -> u64 {
    chunks.iter().map(|(_, data)| data.len() as u64).sum()
}

fn h2(stream: u32, path: &str, status: u16) -> H2Request {
    H2Request {
        stream,
        method: Some("GET".into()),
        path: Some(path.into()),
        status: Some(status),
    }
}

/// The exchanges decode as captured: a benchmark of a parser that gave up
/// early would measure nothing.
fn check(name: &str, summary: &Summary) {
    match name {
        "http1_keepalive" => {
            let http = summary.http.as_ref().expect("http");
            assert_eq!(summary.protocol, "http/1.1");
            let seen: Vec<_> = http
                .requests
                .iter()
                .map(|r: &HttpRequest| (&*r.path, r.status))
                .collect();
            assert_eq!(
                seen,
                [
                    ("/", Some(200)),
                    ("/api/v1/items?page=2&sort=name", Some(200)),
                    ("/missing", Some(404))
                ]
            );
        }
        "websocket" => {
            assert_eq!(summary.protocol, "websocket");
            let ws = summary.websocket.as_ref().expect("websocket");
            assert!(ws.key_ok);
            assert_eq!(ws.subprotocol.as_deref(), Some("chat"));
            assert_eq!(ws.close.as_ref().map(|c| c.code), Some(Some(1000)));
            assert_eq!(ws.frames[Side::Server.index()].binary, 1);
        }
        "http2_curl" | "http2_streams" => {
            assert_eq!(summary.protocol, "http/2");
            let h2s = summary.http2.as_ref().expect("http2");
            assert_eq!(h2s.mode, H2Mode::PriorKnowledge);
            assert!(h2s.headers_readable);
            let expected: &[H2Request] = if name == "http2_curl" {
                &[h2(1, "/api/v1/items?page=2&sort=name", 200)]
            } else {
                &[
                    h2(1, "/", 200),
                    h2(3, "/api/v1/items?page=2", 200),
                    h2(5, "/missing", 404),
                ]
            };
            assert_eq!(h2s.requests, expected);
        }
        "tls" => {
            assert_eq!(summary.protocol, "tls");
            let tls = summary.tls.as_ref().expect("tls");
            assert_eq!(tls.version, Some("1.3"));
            assert_eq!(tls.sni.as_deref(), Some("demo.test"));
            assert_eq!(tls.alpn, [std::sync::Arc::from("h2"), std::sync::Arc::from("http/1.1")]);
        }
        _ => unreachable!("{name}"),
    }
}

fn exchanges() -> [(&'static str, Chunks); 5] {
    [
        ("http1_keepalive", http1_keepalive()),
        ("websocket", websocket()),
        ("http2_curl", http2_curl()),
        ("http2_streams", http2_streams()),
        ("tls", tls()),
    ]
}

fn per_exchange(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, chunks: &Chunks, run: impl Fn(&Chunks)) {
    group.throughput(Throughput::Bytes(bytes(chunks)));
    group.bench_function(name, |b| b.iter(|| run(black_box(chunks))));
}

fn tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    for (name, chunks) in exchanges() {
        check(name, &track(&chunks).summary());
        per_exchange(&mut group, name, &chunks, |chunks| {
            black_box(track(chunks).summary());
        });
    }
    group.finish();
}

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parser");
    let [http1, _, h2_curl, h2_streams, tls] = exchanges();
    let frames = websocket_frames();
    assert_eq!(replay(WebSocket::new(), &frames).frames(Side::Client).binary, 1);
    per_exchange(&mut group, http1.0, &http1.1, |chunks| {
        black_box(replay(Http1::new(), chunks));
    });
    per_exchange(&mut group, "websocket_frames", &frames, |chunks| {
        black_box(replay(WebSocket::new(), chunks));
    });
    for (name, chunks) in [h2_curl, h2_streams] {
        assert!(replay(Http2::new(H2Mode::PriorKnowledge, true), &chunks).headers_readable());
        per_exchange(&mut group, name, &chunks, |chunks| {
            black_box(replay(Http2::new(H2Mode::PriorKnowledge, true), chunks));
        });
    }
    per_exchange(&mut group, tls.0, &tls.1, |chunks| {
        black_box(replay(Tls::new(), chunks));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = tracker, parser
}
criterion_main!(benches);
