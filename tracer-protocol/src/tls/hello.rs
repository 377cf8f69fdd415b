//! The hellos' fields tracer reports, read where they lie: the fixed fields
//! of RFC 8446 §4.1.2-4.1.3, then the server_name (RFC 6066 §3),
//! application_layer_protocol_negotiation (RFC 7301 §3.1) and
//! supported_versions (RFC 8446 §4.2.1) extensions. Hand-written because
//! `tls-parser` builds a list of each hello's cipher suites, extensions and
//! their entries: 582 allocations for the 40 handshakes of the pipeline
//! bench's recording, in its steady state, where this walk makes none.

/// A ClientHello's offers, still encoded.
#[derive(Debug, Default)]
pub struct ClientHello<'a> {
    pub server_name: Option<&'a [u8]>,
    pub protocols: Option<Protocols<'a>>,
}

/// A ServerHello's choices.
#[derive(Debug)]
pub struct ServerHello<'a> {
    /// `legacy_version`: TLS 1.3 keeps 1.2 here, for middleboxes (§4.1.3).
    pub version: u16,
    /// From supported_versions: what TLS 1.3 really negotiated.
    pub selected_version: Option<u16>,
    pub protocol: Option<&'a [u8]>,
}

/// An ALPN extension's protocol names, checked whole before they are read.
#[derive(Clone, Copy, Debug)]
pub struct Protocols<'a>(Reader<'a>);

impl<'a> Iterator for Protocols<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.0.vec8()
    }
}

const RANDOM: usize = 32;
const MAX_SESSION_ID: usize = 32;
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
const SUPPORTED_VERSIONS: u16 = 43;
const HOST_NAME: u8 = 0;

/// `body`: the handshake message after its type and length. None when its
/// fixed fields do not parse; a malformed extension block yields no
/// extension rather than a guess.
pub fn client_hello(body: &[u8]) -> Option<ClientHello<'_>> {
    let mut r = Reader(body);
    r.u16()?;
    r.bytes(RANDOM)?;
    session_id(&mut r)?;
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None;
    }
    let mut hello = ClientHello::default();
    let walked = each_extension(r, |kind, data| {
        match kind {
            SERVER_NAME => hello.server_name = host_name(data)?,
            ALPN => hello.protocols = Some(protocols(data)?),
            _ => {}
        }
        Some(())
    });
    Some(if walked.is_some() {
        hello
    } else {
        ClientHello::default()
    })
}

/// None too when its extension block is malformed: without it, a TLS 1.3
/// ServerHello would pass for 1.2 by its `legacy_version`.
pub fn server_hello(body: &[u8]) -> Option<ServerHello<'_>> {
    let mut r = Reader(body);
    let version = r.u16()?;
    r.bytes(RANDOM)?;
    session_id(&mut r)?;
    r.u16()?;
    r.u8()?;
    let (mut selected_version, mut protocol) = (None, None);
    each_extension(r, |kind, data| {
        match kind {
            SUPPORTED_VERSIONS => selected_version = Some(whole(data, Reader::u16)?),
            ALPN => protocol = protocols(data)?.next(),
            _ => {}
        }
        Some(())
    })?;
    Some(ServerHello {
        version,
        selected_version,
        protocol,
    })
}

/// `legacy_session_id` (or its echo): at most 32 bytes.
fn session_id(r: &mut Reader) -> Option<()> {
    (r.vec8()?.len() <= MAX_SESSION_ID).then_some(())
}

/// Calls `f` with each extension's type and data; None when the block, or
/// `f`, finds them malformed. A hello may end before the block (TLS ≤ 1.2).
fn each_extension<'a>(mut rest: Reader<'a>, mut f: impl FnMut(u16, &'a [u8]) -> Option<()>) -> Option<()> {
    if rest.is_empty() {
        return Some(());
    }
    let mut block = Reader(rest.vec16()?);
    while !block.is_empty() {
        let kind = block.u16()?;
        f(kind, block.vec16()?)?;
    }
    Some(())
}

/// `read` over all of `data`, which must hold nothing more.
fn whole<'a, T>(data: &'a [u8], read: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<T> {
    let mut r = Reader(data);
    let value = read(&mut r)?;
    r.is_empty().then_some(value)
}

/// The first host name of a server_name list: Some(None) when it has none.
fn host_name(data: &[u8]) -> Option<Option<&[u8]>> {
    let mut names = Reader(whole(data, Reader::vec16)?);
    let mut first = None;
    while !names.is_empty() {
        let kind = names.u8()?;
        let name = names.vec16()?;
        if kind == HOST_NAME && name.is_empty() {
            return None;
        }
        if kind == HOST_NAME && first.is_none() {
            first = Some(name);
        }
    }
    Some(first)
}

fn protocols(data: &[u8]) -> Option<Protocols<'_>> {
    let list = Reader(whole(data, Reader::vec16)?);
    // Names are <1..2^8-1> bytes long, and fill the list exactly.
    let mut check = list;
    while !check.is_empty() {
        if check.vec8()?.is_empty() {
            return None;
        }
    }
    Some(Protocols(list))
}

/// A cursor over bytes whose every read is bounds-checked.
#[derive(Clone, Copy, Debug)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.bytes(n.into())
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.bytes(n.into())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        [&kind.to_be_bytes()[..], &(data.len() as u16).to_be_bytes(), data].concat()
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        [&(data.len() as u16).to_be_bytes()[..], data].concat()
    }

    /// A ClientHello's body: fixed fields, one cipher suite, then `extensions`
    /// (the block's bytes, length included), if any.
    fn client(extensions: &[u8]) -> Vec<u8> {
        [
            &[3, 3][..],
            &[0; RANDOM],
            &[0],
            &vec16(&[0x13, 0x01]),
            &[1, 0],
            extensions,
        ]
        .concat()
    }

    fn server(extensions: &[u8]) -> Vec<u8> {
        [&[3, 3][..], &[0; RANDOM], &[0], &[0x13, 0x01], &[0], extensions].concat()
    }

    fn names<'a>(hello: &ClientHello<'a>) -> (Option<&'a [u8]>, Vec<&'a [u8]>) {
        (hello.server_name, hello.protocols.into_iter().flatten().collect())
    }

    #[test]
    fn a_hello_without_extensions_offers_nothing() {
        let body = client(&[]);
        let hello = client_hello(&body).expect("parses");
        assert_eq!(names(&hello), (None, vec![]));
        let body = server(&[]);
        let hello = server_hello(&body).expect("parses");
        assert_eq!(
            (hello.version, hello.selected_version, hello.protocol),
            (0x0303, None, None)
        );
    }

    #[test]
    fn the_first_host_name_and_every_protocol() {
        let sni = vec16(&[&[7, 0, 1, b'x'][..], &[HOST_NAME, 0, 1, b'a'], &[HOST_NAME, 0, 1, b'b']].concat());
        let alpn = vec16(b"\x02h2\x08http/1.1");
        let block = vec16(&[ext(SERVER_NAME, &sni), ext(99, b"?"), ext(ALPN, &alpn)].concat());
        let body = client(&block);
        let hello = client_hello(&body).expect("parses");
        assert_eq!(names(&hello), (Some(&b"a"[..]), vec![&b"h2"[..], b"http/1.1"]));
    }

    #[test]
    fn a_malformed_extension_gives_none_of_them() {
        let sni = vec16(&[HOST_NAME, 0, 1, b'a']);
        // An ALPN entry that runs past its list, a block longer than the hello.
        let bad_alpn = vec16(b"\x05h2");
        for block in [
            vec16(&[ext(SERVER_NAME, &sni), ext(ALPN, &bad_alpn)].concat()),
            [&[0, 99][..], &ext(SERVER_NAME, &sni)].concat(),
        ] {
            let body = client(&block);
            let hello = client_hello(&body).expect("the fixed fields parse");
            assert_eq!(names(&hello), (None, vec![]));
        }
    }

    #[test]
    fn fixed_fields_that_do_not_parse_are_no_hello() {
        let mut no_suites = client(&[]);
        no_suites[RANDOM + 3..RANDOM + 5].copy_from_slice(&[0, 0]);
        for body in [&client(&[])[..10], &no_suites] {
            assert!(client_hello(body).is_none(), "{body:?}");
        }
        assert!(server_hello(&server(&[])[..RANDOM + 3]).is_none());
    }

    #[test]
    fn the_server_picks_a_version_and_a_protocol() {
        let block = vec16(&[ext(SUPPORTED_VERSIONS, &[3, 4]), ext(ALPN, &vec16(b"\x02h2"))].concat());
        let body = server(&block);
        let hello = server_hello(&body).expect("parses");
        assert_eq!(hello.selected_version, Some(0x0304));
        assert_eq!(hello.protocol, Some(&b"h2"[..]));
        // supported_versions holds exactly one version in a ServerHello;
        // a malformed block is no ServerHello, not a 1.2 one.
        let block = vec16(&ext(SUPPORTED_VERSIONS, &[3, 4, 0]));
        assert!(server_hello(&server(&block)).is_none());
        let block = vec16(&[ext(SUPPORTED_VERSIONS, &[3, 4]), vec![0, 0x33, 0, 99, 0]].concat());
        assert!(server_hello(&server(&block)).is_none());
    }

    #[test]
    fn what_the_rfcs_bound_is_held_to() {
        let long_session = |body: &mut Vec<u8>| {
            body[2 + RANDOM] = 33;
            body.splice(3 + RANDOM..3 + RANDOM, [0; 33]);
        };
        let (mut c, mut s) = (client(&[]), server(&[]));
        long_session(&mut c);
        long_session(&mut s);
        assert!(client_hello(&c).is_none() && server_hello(&s).is_none());
        let mut no_compression = client(&[]);
        let at = no_compression.len() - 2;
        no_compression.splice(at.., [0]);
        assert!(client_hello(&no_compression).is_none());
        // An empty protocol or host name is a malformed extension.
        for block in [
            vec16(&ext(ALPN, &vec16(b"\x00\x02h2"))),
            vec16(&ext(SERVER_NAME, &vec16(&[HOST_NAME, 0, 0]))),
        ] {
            let body = client(&block);
            assert_eq!(names(&client_hello(&body).expect("parses")), (None, vec![]));
        }
    }
}
