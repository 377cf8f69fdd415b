//! The demo's application exchanges, byte for byte: what a client and a
//! server of each protocol say, played over a real loopback connection so
//! that the tracer sees them as it would see the real programs.

/// Who says a line of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Says {
    Client,
    Server,
}

pub type Script = &'static [(Says, &'static [u8])];

pub const KEEP_ALIVE: Script = &[
    (Says::Client, b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n"),
    (Says::Server, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"),
    (Says::Client, b"GET /missing HTTP/1.1\r\nHost: demo\r\n\r\n"),
    (Says::Server, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    (
        Says::Client,
        b"GET /search?q=secret HTTP/1.1\r\nHost: demo\r\nCookie: session=secret\r\n\r\n",
    ),
    (
        Says::Server,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nthis\r\n3\r\nis \r\n7\r\nchunked\r\n0\r\n\r\n",
    ),
];

/// RFC 6455's own example key, and the accept key it calls for.
pub const WEBSOCKET: Script = &[
    (
        Says::Client,
        b"GET /chat HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
    (
        Says::Server,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
    ),
    // A masked text frame "hello" (mask 01 02 03 04), and its unmasked echo.
    (Says::Client, b"\x81\x85\x01\x02\x03\x04\x69\x67\x6f\x68\x6e"),
    (Says::Server, b"\x81\x05hello"),
    // A masked ping, and the pong.
    (Says::Client, b"\x89\x80\x01\x02\x03\x04"),
    (Says::Server, b"\x8a\x00"),
    // Close 1000 "bye" from the client (masked), and the server's reply.
    (Says::Client, b"\x88\x85\x01\x02\x03\x04\x02\xea\x61\x7d\x64"),
    (Says::Server, b"\x88\x02\x03\xe8"),
];

/// Prior knowledge: the preface, SETTINGS both ways, two requests on streams
/// 1 and 3 (HPACK: static-table entries and one dynamic-table entry).
pub const HTTP2: Script = &[
    (
        Says::Client,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\
\x00\x00\x00\x04\x00\x00\x00\x00\x00\
\x00\x00\x09\x01\x05\x00\x00\x00\x01\x82\x84\x86\x41\x04demo\
\x00\x00\x0d\x01\x05\x00\x00\x00\x03\x82\x04\x08/missing\x86\xbe",
    ),
    (
        Says::Server,
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\
\x00\x00\x00\x04\x01\x00\x00\x00\x00\
\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88\
\x00\x00\x06\x00\x01\x00\x00\x00\x01hello\n\
\x00\x00\x01\x01\x05\x00\x00\x00\x03\x8d",
    ),
    (
        Says::Client,
        b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00",
    ),
];

/// A ClientHello for demo.test offering h2 and http/1.1, and the server's
/// first flight (ServerHello, then what TLS 1.3 encrypts), as Python's ssl
/// module wrote them.
pub const TLS: Script = &[
    (Says::Client, include_bytes!("tls_client_hello.bin")),
    (Says::Server, include_bytes!("tls_server_flight.bin")),
];
