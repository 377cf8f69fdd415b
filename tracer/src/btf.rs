//! Where the running kernel keeps a struct's fields, read from its BTF.
//!
//! The state and retransmit hooks are BTF tracepoints: they get the socket
//! itself, not a record laid out by a tracepoint, so they read the socket's fields at the
//! offsets this module finds. aya parses BTF too but keeps struct members
//! private, and the one maintained BTF crate (btf-rs) is LGPL, so this reader
//! walks the type section itself: it only needs names, kinds and members.
use std::borrow::Cow;

use tracer_common::SockLayout;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// What the kernel's BTF does not say, as one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {0}: {1}")]
    Read(&'static str, std::io::Error),
    #[error("{0} is not BTF this tracer can read")]
    Parse(&'static str),
    #[error("this kernel's BTF has no field {1} in struct {0}")]
    Missing(&'static str, &'static str),
}

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Where the running kernel keeps a socket's endpoints.
pub fn sock_layout() -> Result<SockLayout, LayoutError> {
    let raw = std::fs::read(VMLINUX).map_err(|e| LayoutError::Read(VMLINUX, e))?;
    let btf = Btf::parse(&raw).ok_or(LayoutError::Parse(VMLINUX))?;
    // `struct sock` and `struct inet_sock` start with `struct sock_common`.
    let member = |s: &'static str, m: &'static str| btf.member_offset(s, m).ok_or(LayoutError::Missing(s, m));
    let at = |m| member("sock_common", m);
    Ok(SockLayout {
        protocol: member("sock", "sk_protocol")?,
        family: at("skc_family")?,
        num: at("skc_num")?,
        sport: member("inet_sock", "inet_sport")?,
        dport: at("skc_dport")?,
        daddr: at("skc_daddr")?,
        rcv_saddr: at("skc_rcv_saddr")?,
        // A kernel without IPv6 has neither field, and no IPv6 socket to read them from.
        v6_daddr: at("skc_v6_daddr").unwrap_or(0),
        v6_rcv_saddr: at("skc_v6_rcv_saddr").unwrap_or(0),
        txhash: member("sock", "sk_txhash")?,
        total_retrans: member("tcp_sock", "total_retrans")?,
    })
}

/// A kernel's BTF, indexed by type id.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset in `types` of type id `i + 1`.
    starts: Vec<usize>,
}

/// One `struct btf_type` and, for structs and unions, its members.
struct Type<'a> {
    name: u32,
    kind: u32,
    /// The referenced type of a typedef or qualifier.
    target: u32,
    members: &'a [u8],
    bit_offsets: bool,
}

impl<'a> Btf<'a> {
    /// None if `raw` is not little-endian BTF or its sections are cut short.
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        if u16::from_le_bytes(raw.get(..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = le32(raw, 4)? as usize;
        let section = |at: usize| -> Option<&'a [u8]> {
            let (off, len) = (le32(raw, at)? as usize, le32(raw, at + 4)? as usize);
            raw.get(hdr_len.checked_add(off)?..hdr_len.checked_add(off)?.checked_add(len)?)
        };
        if hdr_len < HEADER_LEN {
            return None;
        }
        let (types, strings) = (section(8)?, section(16)?);
        let starts = index(types)?;
        Some(Self { types, strings, starts })
    }

    /// The byte offset of `member` in struct `name`, looking inside anonymous
    /// structs and unions as C does (`sock_common.skc_daddr` sits in two).
    /// None for a bitfield that does not start on a byte.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = (1..=self.starts.len() as u32).find(|&id| {
            self.get(id)
                .is_some_and(|t| t.kind == KIND_STRUCT && self.string(t.name).as_deref() == Some(name))
        })?;
        self.find_member(id, member, 0)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.get(self.resolve(id)?)?;
        if depth > 8 || (t.kind != KIND_STRUCT && t.kind != KIND_UNION) {
            return None;
        }
        t.members.chunks_exact(TYPE_LEN).find_map(|m| {
            let (name, ty, raw_offset) = (le32(m, 0)?, le32(m, 4)?, le32(m, 8)?);
            let bits = if t.bit_offsets {
                raw_offset & 0xff_ffff
            } else {
                raw_offset
            };
            match self.string(name)?.as_ref() {
                "" => Some(bits + self.find_member(ty, member, depth + 1)?),
                n if n == member => Some(bits),
                _ => None,
            }
        })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.target,
                _ => return Some(id),
            }
        }
        None
    }

    fn get(&self, id: u32) -> Option<Type<'a>> {
        let at = *self.starts.get(id.checked_sub(1)? as usize)?;
        let info = le32(self.types, at + 4)?;
        let kind = info >> 24 & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let members = match kind {
            KIND_STRUCT | KIND_UNION => self.types.get(at + TYPE_LEN..at + TYPE_LEN + vlen * TYPE_LEN)?,
            _ => &[],
        };
        Some(Type {
            name: le32(self.types, at)?,
            kind,
            target: le32(self.types, at + 8)?,
            members,
            bit_offsets: info >> 31 == 1,
        })
    }

    fn string(&self, off: u32) -> Option<Cow<'a, str>> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]))
    }
}

/// The start of every type, in id order: each kind is followed by its own
/// amount of data, so the section can only be walked from the front.
fn index(types: &[u8]) -> Option<Vec<usize>> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < types.len() {
        starts.push(at);
        let info = le32(types, at + 4)?;
        let vlen = (info & 0xffff) as usize;
        let extra = match info >> 24 & 0x1f {
            1 | 14 | 17 => 4,             // int, var, decl_tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,           // enum, func_proto
            2 | 7..=12 | 16 | 18 => 0,    // ptr, fwd, typedef, qualifiers, func, float, type_tag
            _ => return None,
        };
        at += TYPE_LEN + extra;
    }
    (at == types.len()).then_some(starts)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTF with `struct outer { int a; union { int b; struct { int c; int d; }; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0";
        let s = |name: &str| {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| types.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        push(&[s("int"), 1 << 24, 4, 32]); // 1: int
        push(&[0, 4 << 24 | 2, 8, s("c"), 1, 0, s("d"), 1, 32]); // 2: anonymous struct
        push(&[0, 5 << 24 | 2, 8, s("b"), 1, 0, 0, 2, 0]); // 3: anonymous union
        push(&[s("outer"), 4 << 24 | 2, 12, s("a"), 1, 0, 0, 3, 32]); // 4: outer
        let mut raw = Vec::new();
        for w in [
            0x0001_eb9f,
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            raw.extend(w.to_le_bytes());
        }
        raw.extend(&types);
        raw.extend(strings);
        raw
    }

    #[test]
    fn finds_members_inside_anonymous_structs_and_unions() {
        let raw = sample();
        let btf = Btf::parse(&raw).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "b"), Some(4));
        assert_eq!(btf.member_offset("outer", "c"), Some(4));
        assert_eq!(btf.member_offset("outer", "d"), Some(8));
        assert_eq!(btf.member_offset("outer", "e"), None);
        assert_eq!(btf.member_offset("inner", "a"), None);
    }

    #[test]
    fn refuses_cut_or_foreign_data() {
        let raw = sample();
        for cut in [0, 2, 23, 30, raw.len() - 1] {
            assert!(Btf::parse(&raw[..cut]).is_none(), "cut at {cut}");
        }
        assert!(Btf::parse(b"\x7fELF and more bytes than a header holds").is_none());
    }

    /// The running kernel's own BTF (the tracer refuses kernels without
    /// one): the first fields of `struct sock_common` have sat at these
    /// offsets for a decade.
    #[test]
    fn reads_the_running_kernels_socket_layout() {
        let at = sock_layout().expect("this kernel's BTF describes sock_common");
        assert_eq!(
            (at.daddr, at.rcv_saddr, at.dport, at.num, at.family),
            (0, 4, 12, 14, 16)
        );
        assert!(at.protocol > at.v6_daddr && at.sport > at.protocol, "{at:?}");
        assert!(at.v6_daddr > 16 && at.v6_rcv_saddr == at.v6_daddr + 16, "{at:?}");
    }
}
