//! TLS: the ClientHello's server name and offered ALPN protocols, the
//! ServerHello's negotiated version and selected protocol. Everything after a
//! side's hello is encrypted or of no interest here, and is let go.

use tls_parser::{
    MAX_RECORD_LEN, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, TlsVersion,
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_server_hello_extensions,
};

use super::{Feed, Side};

const RECORD_HEADER: usize = 5;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_HEADER: usize = 4;
/// A hello may span records (post-quantum key shares make ClientHellos of
/// several KiB); one larger than this is not reassembled.
const MAX_HELLO: usize = 64 * 1024;
/// Server names and protocol ids are kept up to this many bytes (both are at most 255 on the wire).
const MAX_NAME: usize = 255;
const MAX_PROTOCOLS: usize = 16;

/// The hellos of one TLS connection.
#[derive(Debug, Default)]
pub struct Tls {
    halves: [Half; 2],
    proven: bool,
    version: Option<&'static str>,
    sni: Option<String>,
    alpn: Vec<String>,
    alpn_selected: Option<String>,
}

#[derive(Debug, Default)]
struct Half {
    done: bool,
    /// The hello's handshake message, gathered from record payloads.
    message: Vec<u8>,
}

/// How far some bytes go towards a whole unit (a record, a hello).
enum Scan<T> {
    Partial,
    Invalid,
    Whole(T),
}

impl Tls {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, side: Side, data: &[u8], _ts_ns: u64) -> Feed {
        if !self.wants(side) {
            return Feed {
                used: data.len(),
                skip: 0,
            };
        }
        match record(data) {
            Scan::Partial => Feed::WAIT,
            Scan::Invalid => {
                self.fail(side);
                Feed {
                    used: data.len(),
                    skip: 0,
                }
            }
            Scan::Whole(fragment) => {
                self.halves[side.index()].message.extend_from_slice(fragment);
                self.assemble(side);
                Feed {
                    used: RECORD_HEADER + fragment.len(),
                    skip: 0,
                }
            }
        }
    }

    /// A hello cannot be reassembled across lost bytes.
    pub fn gap(&mut self, side: Side) {
        self.finish(side);
    }

    /// False once that side's hello is parsed or proved unparseable.
    pub fn wants(&self, side: Side) -> bool {
        !self.halves[side.index()].done
    }

    /// A ClientHello was parsed.
    pub fn proven(&self) -> bool {
        self.proven
    }

    /// The negotiated version, from the ServerHello; `None` before one.
    pub fn version(&self) -> Option<&'static str> {
        self.version
    }

    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Offered by the client, in its order.
    pub fn alpn(&self) -> &[String] {
        &self.alpn
    }

    /// Only TLS ≤ 1.2 shows it: 1.3 sends it in the encrypted EncryptedExtensions.
    pub fn alpn_selected(&self) -> Option<&str> {
        self.alpn_selected.as_deref()
    }

    /// Parses the side's hello once its handshake message is whole.
    fn assemble(&mut self, side: Side) {
        let message = std::mem::take(&mut self.halves[side.index()].message);
        match hello(side, &message) {
            Scan::Partial => self.halves[side.index()].message = message,
            Scan::Invalid => self.fail(side),
            Scan::Whole(hello) => {
                match side {
                    Side::Client => self.client_hello(hello),
                    Side::Server => self.server_hello(hello),
                }
                self.finish(side);
            }
        }
    }

    fn client_hello(&mut self, message: &[u8]) {
        let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
            parse_tls_message_handshake(message)
        else {
            self.fail(Side::Client);
            return;
        };
        self.proven = true;
        let extensions = hello.ext.and_then(|ext| parse_tls_client_hello_extensions(ext).ok());
        for extension in extensions.map(|(_, list)| list).unwrap_or_default() {
            match extension {
                TlsExtension::SNI(names) => {
                    self.sni = names
                        .iter()
                        .find(|(kind, _)| *kind == SNIType::HostName)
                        .map(|(_, name)| bounded(name));
                }
                TlsExtension::ALPN(protocols) => {
                    self.alpn = protocols
                        .iter()
                        .take(MAX_PROTOCOLS)
                        .map(|protocol| bounded(protocol))
                        .collect();
                }
                _ => {}
            }
        }
    }

    fn server_hello(&mut self, message: &[u8]) {
        let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello)))) =
            parse_tls_message_handshake(message)
        else {
            return;
        };
        self.version = version_name(hello.version);
        let extensions = hello.ext.and_then(|ext| parse_tls_server_hello_extensions(ext).ok());
        for extension in extensions.map(|(_, list)| list).unwrap_or_default() {
            match extension {
                // TLS 1.3 keeps 1.2 in the version field, for middleboxes (RFC 8446 §4.1.3).
                TlsExtension::SupportedVersions(versions) if versions.contains(&TlsVersion::Tls13) => {
                    self.version = Some("1.3");
                }
                TlsExtension::ALPN(protocols) => {
                    self.alpn_selected = protocols.first().map(|protocol| bounded(protocol))
                }
                _ => {}
            }
        }
    }

    /// A client that sends no ClientHello is not speaking TLS at all: neither side is worth reading.
    fn fail(&mut self, side: Side) {
        self.finish(side);
        if side == Side::Client {
            self.finish(Side::Server);
        }
    }

    fn finish(&mut self, side: Side) {
        self.halves[side.index()] = Half {
            done: true,
            message: Vec::new(),
        };
    }
}

/// The payload of the handshake record `data` starts with.
fn record(data: &[u8]) -> Scan<&[u8]> {
    // The header is judged byte by byte, so that anything else is turned down from its first byte.
    match *data {
        [kind, ..] if kind != HANDSHAKE => Scan::Invalid,
        [_, major, ..] if major != 3 => Scan::Invalid,
        [_, _, _, hi, lo, ref rest @ ..] => {
            let len = u16::from_be_bytes([hi, lo]);
            if len == 0 || len > MAX_RECORD_LEN {
                return Scan::Invalid;
            }
            rest.get(..usize::from(len)).map_or(Scan::Partial, Scan::Whole)
        }
        _ => Scan::Partial,
    }
}

/// The side's hello at the start of `message`: a message of any other type means no hello will come.
fn hello(side: Side, message: &[u8]) -> Scan<&[u8]> {
    let expected = match side {
        Side::Client => CLIENT_HELLO,
        Side::Server => SERVER_HELLO,
    };
    match *message {
        [kind, ..] if kind != expected => Scan::Invalid,
        [_, l0, l1, l2, ..] => {
            let len = HELLO_HEADER + u32::from_be_bytes([0, l0, l1, l2]) as usize;
            if len > MAX_HELLO {
                return Scan::Invalid;
            }
            message.get(..len).map_or(Scan::Partial, Scan::Whole)
        }
        _ => Scan::Partial,
    }
}

fn version_name(version: TlsVersion) -> Option<&'static str> {
    match version {
        TlsVersion::Tls12 => Some("1.2"),
        TlsVersion::Tls11 => Some("1.1"),
        TlsVersion::Tls10 => Some("1.0"),
        TlsVersion::Ssl30 => Some("ssl3"),
        _ => None,
    }
}

fn bounded(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(MAX_NAME)]).into_owned()
}
