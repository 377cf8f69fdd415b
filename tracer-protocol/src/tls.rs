//! TLS: the ClientHello's server name and offered ALPN protocols, the
//! ServerHello's negotiated version and selected protocol. Everything after a
//! side's hello is encrypted or of no interest here, and is let go.

mod hello;

use std::{cell::RefCell, sync::Arc};

use super::{Feed, Side, shared_prefix, spare, spare::Lists};

thread_local! {
    /// ALPN lists of finished parsers and printed records.
    pub(crate) static PROTOCOLS: RefCell<Lists<Arc<str>>> = const { RefCell::new(Lists::new()) };
}

const RECORD_HEADER: usize = 5;
/// The longest record payload a peer may send (RFC 8446 §5.2: 2^14 bytes,
/// plus 256 of expansion in a protected record).
const MAX_RECORD_LEN: u16 = (1 << 14) + 256;
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
    sni: Option<Arc<str>>,
    alpn: Vec<Arc<str>>,
    alpn_selected: Option<Arc<str>>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        spare::give_list(&PROTOCOLS, std::mem::take(&mut self.alpn));
    }
}

#[derive(Debug, Default)]
struct Half {
    done: bool,
    /// The hello's handshake message, gathered from record payloads when it
    /// spans records (a hello in one record is read where it lies).
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
                self.assemble(side, fragment);
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

    pub fn sni(&self) -> Option<&Arc<str>> {
        self.sni.as_ref()
    }

    /// Offered by the client, in its order.
    pub fn alpn(&self) -> &[Arc<str>] {
        &self.alpn
    }

    /// Only TLS ≤ 1.2 shows it: 1.3 sends it in the encrypted EncryptedExtensions.
    pub fn alpn_selected(&self) -> Option<&Arc<str>> {
        self.alpn_selected.as_ref()
    }

    /// Adds a record's payload to the side's hello, and parses the hello
    /// once it is whole.
    fn assemble(&mut self, side: Side, fragment: &[u8]) {
        let gathered = &mut self.halves[side.index()].message;
        if gathered.is_empty() {
            if self.parse(side, fragment) {
                self.halves[side.index()].message.extend_from_slice(fragment);
            }
            return;
        }
        gathered.extend_from_slice(fragment);
        let message = std::mem::take(gathered);
        if self.parse(side, &message) {
            self.halves[side.index()].message = message;
        }
    }

    /// Parses the side's hello if `message` holds it whole; true when it
    /// holds only its start.
    fn parse(&mut self, side: Side, message: &[u8]) -> bool {
        match hello(side, message) {
            Scan::Partial => return true,
            Scan::Invalid => self.fail(side),
            Scan::Whole(hello) => {
                match side {
                    Side::Client => self.client_hello(hello),
                    Side::Server => self.server_hello(hello),
                }
                self.finish(side);
            }
        }
        false
    }

    fn client_hello(&mut self, message: &[u8]) {
        let Some(hello) = hello::client_hello(&message[HELLO_HEADER..]) else {
            self.fail(Side::Client);
            return;
        };
        self.proven = true;
        self.sni = hello.server_name.map(name);
        self.alpn.clear();
        for protocol in hello.protocols.into_iter().flatten().take(MAX_PROTOCOLS) {
            spare::room_for_one(&PROTOCOLS, &mut self.alpn);
            self.alpn.push(name(protocol));
        }
    }

    fn server_hello(&mut self, message: &[u8]) {
        let Some(hello) = hello::server_hello(&message[HELLO_HEADER..]) else {
            return;
        };
        self.version = match hello.selected_version {
            Some(TLS13) => Some("1.3"),
            _ => version_name(hello.version),
        };
        self.alpn_selected = hello.protocol.map(name);
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

const TLS13: u16 = 0x0304;

fn version_name(version: u16) -> Option<&'static str> {
    match version {
        0x0303 => Some("1.2"),
        0x0302 => Some("1.1"),
        0x0301 => Some("1.0"),
        0x0300 => Some("ssl3"),
        _ => None,
    }
}

/// Names repeat from connection to connection: each is shared, not copied.
fn name(value: &[u8]) -> Arc<str> {
    shared_prefix(value, MAX_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay;
    use proptest::prelude::*;

    /// curl 7.88.1 (OpenSSL 3.0) `--http2 https://example.com:19444/` to
    /// `openssl s_server -alpn h2,http/1.1`, captured on loopback: the
    /// ClientHello record (SNI example.com, ALPN h2 and http/1.1, TLS 1.3 and
    /// 1.2 offered), ChangeCipherSpec, the first encrypted record.
    const CLIENT_13: &str = "1603010200010001fc03032528bcbc9ea7e2d2a1\
        815a0d2b600722ffaa0ac015b526492466849e54c33d94208741f527e9100e95653a680427d197e0e34aee0c0752738f27a17cf5b022\
        dde5003e130213031301c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d\
        009c003d003c0035002f00ff0100017500000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017\
        001e00190018010001010102010301040010000e000c02683208687474702f312e31001600000017000000310000000d002a00280403\
        05030603080708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303020301002d00\
        020101003300260024001d002068f63cb5e63456d1d9437c01066693061b4e3a5c245930eb8d50fc701a3da135001500b20000000000\
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        000000000000000000000014030300010117030300456a10c2a3bd288678e76a029f8f4389e8aed64404604dbddea0206b09dd936a2e\
        2dceac9615ed064211ce05a3db8146f7dba6af89db5d73b53afae4021b523565192d5f935f";
    /// The server's side of that exchange: ServerHello (supported_versions
    /// 1.3), ChangeCipherSpec, the first encrypted record.
    const SERVER_13: &str = "160303007a0200007603039d145b9b55be5c530d\
        78b242f9908c33865167ba10d6b74294a22ee6a7a12667208741f527e9100e95653a680427d197e0e34aee0c0752738f27a17cf5b022\
        dde5130200002e002b0002030400330024001d002000699b705c29a4e8f6a9c1653ca17f7ef5f342159ee1843eff6ca48077bece3d14\
        03030001011703030020b0fb5e5395d61aa73e73d90b59aa27ce5579de0f34cd5c3b60a9e8b705e900bd";
    /// The same client to `openssl s_server -tls1_2 -alpn h2`: the ServerHello
    /// record (ALPN h2), then the start of the Certificate record.
    const SERVER_12: &str = "1603030066020000620303c6413c754f0700c35e\
        5bb624e234009ebe0b70302a8b9db009ee15971c3c7a4920c143f7c209301b402007c0f2b35352e1b39f6413ea3da1ab7776031e7ed5\
        5177c02c00001aff01000100000b00040300010200100005000302683200170000160303018f";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn play(client: &[u8], server: &[u8]) -> Tls {
        let mut tls = Tls::new();
        replay::chunks(&mut tls, [(Side::Client, false, client), (Side::Server, false, server)]);
        tls
    }

    /// Everything the parser holds, to compare runs.
    fn outcome(tls: &Tls) -> String {
        format!("{tls:?}")
    }

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).expect("record length");
        [[kind, 3, 1].as_slice(), &len.to_be_bytes(), payload].concat()
    }

    #[test]
    fn client_hello_gives_sni_and_alpn() {
        let tls = play(&hex(CLIENT_13), &[]);
        assert!(tls.proven());
        assert_eq!(tls.sni().map(|s| &**s), Some("example.com"));
        assert_eq!(tls.alpn(), [Arc::from("h2"), Arc::from("http/1.1")]);
        assert_eq!(tls.version(), None);
        assert!(!tls.wants(Side::Client) && tls.wants(Side::Server));
    }

    #[test]
    fn tls13_server_hello_by_supported_versions() {
        let tls = play(&hex(CLIENT_13), &hex(SERVER_13));
        assert_eq!(tls.version(), Some("1.3"));
        // In 1.3 the server's choice is encrypted.
        assert_eq!(tls.alpn_selected(), None);
        assert!(!tls.wants(Side::Client) && !tls.wants(Side::Server));
    }

    #[test]
    fn tls12_server_hello_with_alpn() {
        let tls = play(&hex(CLIENT_13), &hex(SERVER_12));
        assert_eq!(tls.version(), Some("1.2"));
        assert_eq!(tls.alpn_selected().map(|s| &**s), Some("h2"));
        assert!(!tls.wants(Side::Server));
    }

    #[test]
    fn bytes_after_the_hello_are_let_go() {
        let mut tls = Tls::new();
        let client = hex(CLIENT_13);
        assert_eq!(tls.feed(Side::Client, &client, 0), Feed { used: 517, skip: 0 });
        assert_eq!(
            tls.feed(Side::Client, &client[517..], 0),
            Feed {
                used: client.len() - 517,
                skip: 0
            }
        );
    }

    #[test]
    fn client_hello_across_two_records() {
        let hello = &hex(CLIENT_13)[RECORD_HEADER..517];
        let client = [record(HANDSHAKE, &hello[..3]), record(HANDSHAKE, &hello[3..])].concat();
        let tls = play(&client, &[]);
        assert!(tls.proven());
        assert_eq!(tls.sni().map(|s| &**s), Some("example.com"));
        assert_eq!(tls.alpn(), [Arc::from("h2"), Arc::from("http/1.1")]);
    }

    #[test]
    fn garbage_is_not_tls() {
        // Plain text, a record of another version, an empty record: each turned down at once.
        for garbage in [b"GET / HTTP/1.1\r\n\r\n".as_slice(), &[0x16, 0x7f], &[0x16, 3, 1, 0, 0]] {
            let mut tls = Tls::new();
            assert_eq!(tls.feed(Side::Client, garbage, 0).used, garbage.len(), "{garbage:?}");
            assert!(!tls.proven() && !tls.wants(Side::Client) && !tls.wants(Side::Server));
        }
        // A handshake record that holds no ClientHello.
        let tls = play(&record(HANDSHAKE, &[2, 0, 0, 1, 0]), &[]);
        assert!(!tls.proven() && !tls.wants(Side::Client) && !tls.wants(Side::Server));
        // A ClientHello that does not parse.
        let tls = play(&record(HANDSHAKE, &[1, 0, 0, 2, 3, 3]), &[]);
        assert!(!tls.proven() && !tls.wants(Side::Client));
    }

    #[test]
    fn alert_instead_of_server_hello() {
        let tls = play(&hex(CLIENT_13), &[21, 3, 3, 0, 2, 2, 40]);
        assert!(tls.proven() && !tls.wants(Side::Server));
        assert_eq!(tls.version(), None);
    }

    #[test]
    fn oversized_hello_is_given_up() {
        let tls = play(&record(HANDSHAKE, &[1, 0x01, 0x00, 0x00]), &[]);
        assert!(!tls.proven() && !tls.wants(Side::Client));
    }

    #[test]
    fn gap_ends_a_side() {
        let mut tls = Tls::new();
        let client = hex(CLIENT_13);
        assert_eq!(tls.feed(Side::Client, &client[..100], 0), Feed::WAIT);
        tls.gap(Side::Client);
        assert!(!tls.wants(Side::Client) && !tls.proven());
        assert!(tls.wants(Side::Server));
    }

    /// The exchanges cut at every byte, both sides at once, and byte by byte:
    /// the outcome never depends on how the bytes arrive.
    #[test]
    fn every_split_matches_whole() {
        let hello = &hex(CLIENT_13)[RECORD_HEADER..517];
        let split_hello = [record(HANDSHAKE, &hello[..200]), record(HANDSHAKE, &hello[200..])].concat();
        for (client, server) in [(hex(CLIENT_13), hex(SERVER_13)), (split_hello, hex(SERVER_12))] {
            let whole = play(&client, &server);
            assert!(whole.proven() && whole.version().is_some());
            let whole = outcome(&whole);
            for at in 0..=client.len().max(server.len()) {
                let (c, s) = (
                    client.split_at(at.min(client.len())),
                    server.split_at(at.min(server.len())),
                );
                let mut tls = Tls::new();
                let chunks = [
                    (Side::Client, c.0),
                    (Side::Server, s.0),
                    (Side::Client, c.1),
                    (Side::Server, s.1),
                ];
                replay::chunks(&mut tls, chunks.map(|(side, bytes)| (side, false, bytes)));
                assert_eq!(outcome(&tls), whole, "split at {at}");
            }
            let mut tls = Tls::new();
            let bytes = client.chunks(1).map(|b| (Side::Client, false, b));
            replay::chunks(
                &mut tls,
                bytes.chain(server.chunks(1).map(|b| (Side::Server, false, b))),
            );
            assert_eq!(outcome(&tls), whole, "byte by byte");
        }
    }

    fn any_handshake_record() -> impl Strategy<Value = Vec<u8>> {
        (1u8..3, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(kind, body)| {
            let len = u32::try_from(body.len()).expect("short").to_be_bytes();
            record(HANDSHAKE, &[[kind].as_slice(), &len[1..], &body].concat())
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut tls = Tls::new();
            replay::chunks(&mut tls, replay::fuzz_input(&input));
            prop_assert!(tls.alpn().len() <= MAX_PROTOCOLS);
        }

        #[test]
        fn random_hellos_never_panic(client in any_handshake_record(), server in any_handshake_record(), cut in 0usize..320) {
            let (c, s) = (client.split_at(cut.min(client.len())), server.split_at(cut.min(server.len())));
            let mut tls = Tls::new();
            let chunks = [(Side::Server, s.0), (Side::Client, c.0), (Side::Client, c.1), (Side::Server, s.1)];
            replay::chunks(&mut tls, chunks.map(|(side, bytes)| (side, false, bytes)));
            prop_assert!(tls.sni().is_none_or(|sni| sni.len() <= 3 * MAX_NAME));
        }

        #[test]
        fn mutated_exchange_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let (mut client, mut server) = (hex(CLIENT_13), hex(SERVER_12));
            for (at, byte) in flips {
                let bytes = if at % 2 == 0 { &mut client } else { &mut server };
                let len = bytes.len();
                bytes[at / 2 % len] ^= byte;
            }
            let tls = play(&client, &server);
            prop_assert!(tls.alpn().len() <= MAX_PROTOCOLS);
        }
    }
}
