//! TC classifier on ingress and egress: parse each TCP segment once into a
//! family-neutral tuple, count it in its flow's record, and ship it only when
//! it matters on its own. It never changes or drops traffic: every path
//! returns TC_ACT_UNSPEC (TCX_NEXT), "carry on as if we were not here".
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use tracer_common::{
    AF_INET, AF_INET6, DEFAULT_HEADS, EventHeader, FlowKey, MAX_CAPTURE, PayloadEvent, SegmentEvent, filter, flow_mark,
    hook, kind, tcp_flag, want,
};

use crate::{flow, maps};

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let _ = on_segment(&ctx, hook::INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    let _ = on_segment(&ctx, hook::EGRESS);
    TC_ACT_UNSPEC
}

/// A parsed TCP segment.
struct Segment {
    family: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    payload_off: usize,
    payload_len: u32,
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
/// Extension headers walked before giving up on an IPv6 packet.
const MAX_EXT_HEADERS: usize = 6;

/// A bounds-checked pointer to a `T` at `off` in the packet. At least two
/// bytes are checked: for one, LLVM turns `p + 1 > end` into `p >= end`, from
/// which the verifier learns no safe range (no header ends a packet anyway).
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    let checked = if size_of::<T>() < 2 { 2 } else { size_of::<T>() };
    if start + off + checked > end {
        return None;
    }
    Some((start + off) as *const T)
}

#[inline(always)]
fn u8_at(ctx: &TcContext, off: usize) -> Option<u8> {
    // SAFETY: bounds checked by ptr_at.
    Some(unsafe { *ptr_at::<u8>(ctx, off)? })
}

#[inline(always)]
fn be16_at(ctx: &TcContext, off: usize) -> Option<u16> {
    // SAFETY: bounds checked by ptr_at.
    Some(u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, off)? }))
}

#[inline(always)]
fn addr4_at(ctx: &TcContext, off: usize) -> Option<[u8; 16]> {
    let mut a = [0u8; 16];
    // SAFETY: bounds checked by ptr_at.
    a[..4].copy_from_slice(&unsafe { *ptr_at::<[u8; 4]>(ctx, off)? });
    Some(a)
}

#[inline(always)]
fn addr6_at(ctx: &TcContext, off: usize) -> Option<[u8; 16]> {
    // SAFETY: bounds checked by ptr_at.
    Some(unsafe { *ptr_at::<[u8; 16]>(ctx, off)? })
}

/// Where a TCP segment's headers are, found without reading more than needed.
struct Located {
    family: u16,
    l3: usize,
    l4: usize,
    /// The TCP header and payload's length, from the IP header.
    seg_len: u32,
}

#[inline(always)]
fn locate(ctx: &TcContext) -> Option<Located> {
    let mut l3 = ETH_HLEN;
    let mut proto = be16_at(ctx, 12)?;
    if proto == ETH_P_8021Q {
        proto = be16_at(ctx, 16)?;
        l3 += 4;
    }
    let (family, l4, seg_len) = match proto {
        ETH_P_IP => ipv4(ctx, l3)?,
        ETH_P_IPV6 => ipv6(ctx, l3)?,
        _ => return None,
    };
    Some(Located {
        family,
        l3,
        l4,
        seg_len,
    })
}

/// The whole segment, once the gate let it through. The fixed TCP header is
/// copied out under one bounds check, which the verifier follows where a row
/// of small reads at a variable offset gets merged beyond its understanding.
#[inline(always)]
fn parse(ctx: &TcContext, at: &Located, sport: u16, dport: u16) -> Option<Segment> {
    // SAFETY: bounds checked by ptr_at.
    let h: [u8; 20] = unsafe { *ptr_at::<[u8; 20]>(ctx, at.l4)? };
    let doff = usize::from(h[12] >> 4) * 4;
    if doff < 20 || at.seg_len < doff as u32 {
        return None;
    }
    let (saddr, daddr) = if at.family == AF_INET {
        (addr4_at(ctx, at.l3 + 12)?, addr4_at(ctx, at.l3 + 16)?)
    } else {
        (addr6_at(ctx, at.l3 + 8)?, addr6_at(ctx, at.l3 + 24)?)
    };
    Some(Segment {
        family: at.family,
        saddr,
        daddr,
        sport,
        dport,
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: h[13],
        win: u16::from_be_bytes([h[14], h[15]]),
        payload_off: at.l4 + doff,
        payload_len: at.seg_len - doff as u32,
    })
}

/// IPv4 with options: (family, TCP offset, TCP segment length).
#[inline(always)]
fn ipv4(ctx: &TcContext, l3: usize) -> Option<(u16, usize, u32)> {
    let ihl = usize::from(u8_at(ctx, l3)? & 0x0f) * 4;
    if ihl < 20 || u8_at(ctx, l3 + 9)? != IPPROTO_TCP {
        return None;
    }
    // Only the first fragment carries the TCP header.
    if be16_at(ctx, l3 + 6)? & 0x1fff != 0 {
        return None;
    }
    let total = match u32::from(be16_at(ctx, l3 + 2)?) {
        // BIG TCP: a GSO packet over 64 KiB (loopback allows 512 KiB) has no
        // room for its length in the header, which is then 0; the skb knows it.
        0 => ctx.len().checked_sub(l3 as u32)?,
        n => n,
    };
    let seg_len = total.checked_sub(ihl as u32)?;
    Some((AF_INET, l3 + ihl, seg_len))
}

/// IPv6 and a bounded walk of its extension headers.
#[inline(always)]
fn ipv6(ctx: &TcContext, l3: usize) -> Option<(u16, usize, u32)> {
    let payload = match u32::from(be16_at(ctx, l3 + 4)?) {
        // BIG TCP, as for IPv4: the length lives in the skb only.
        0 => ctx.len().checked_sub(l3 as u32 + 40)?,
        n => n,
    };
    let mut next = u8_at(ctx, l3 + 6)?;
    let mut off = l3 + 40;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_TCP => break,
            // Hop-by-hop, routing, destination options: (hdr_ext_len + 1) * 8.
            0 | 43 | 60 => (usize::from(u8_at(ctx, off + 1)?) + 1) * 8,
            // Fragment: fixed 8 bytes; only the first fragment has the TCP header.
            44 => {
                if be16_at(ctx, off + 2)? & 0xfff8 != 0 {
                    return None;
                }
                8
            }
            // Authentication header: (payload_len + 2) * 4.
            51 => (usize::from(u8_at(ctx, off + 1)?) + 2) * 4,
            _ => return None,
        };
        next = u8_at(ctx, off)?;
        off += len;
    }
    if next != IPPROTO_TCP {
        return None;
    }
    let seg_len = payload.checked_sub((off - l3 - 40) as u32)?;
    Some((AF_INET6, off, seg_len))
}

/// Headers this deep are enough for every segment we parse.
const PULL_BYTES: u32 = 128;

/// Ethernet, IPv4 without options, and the TCP ports: the common case, read
/// under a single bounds check.
const PLAIN_V4: usize = ETH_HLEN + 20 + 4;

/// The plain IPv4 case in one read; None sends the packet down the general path.
#[inline(always)]
fn plain_v4(ctx: &TcContext) -> Option<(Located, u16, u16)> {
    // SAFETY: bounds checked by ptr_at.
    let h: [u8; PLAIN_V4] = unsafe { *ptr_at::<[u8; PLAIN_V4]>(ctx, 0)? };
    let ip = ETH_HLEN;
    let plain = u16::from_be_bytes([h[12], h[13]]) == ETH_P_IP
        && h[ip] == 0x45
        && h[ip + 9] == IPPROTO_TCP
        && u16::from_be_bytes([h[ip + 6], h[ip + 7]]) & 0x1fff == 0;
    let total = u32::from(u16::from_be_bytes([h[ip + 2], h[ip + 3]]));
    if !plain || total < 20 {
        return None;
    }
    let at = Located {
        family: AF_INET,
        l3: ip,
        l4: ip + 20,
        seg_len: total - 20,
    };
    let tcp = ip + 20;
    Some((
        at,
        u16::from_be_bytes([h[tcp], h[tcp + 1]]),
        u16::from_be_bytes([h[tcp + 2], h[tcp + 3]]),
    ))
}

/// Where the ports are, and what they are: the plain IPv4 case in one read,
/// anything else through the general walk.
#[inline(always)]
fn ports(ctx: &TcContext) -> Option<(Located, u16, u16)> {
    if let Some(found) = plain_v4(ctx) {
        return Some(found);
    }
    let at = locate(ctx)?;
    let (sport, dport) = (be16_at(ctx, at.l4)?, be16_at(ctx, at.l4 + 2)?);
    Some((at, sport, dport))
}

/// Headers not all in the linear area (some drivers receive into page
/// fragments) are made linear, which moves bytes within the skb but changes
/// nothing on the wire. False when there is nothing to pull.
#[inline(always)]
fn pull_headers(ctx: &TcContext) -> bool {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    linear < ctx.len() && linear < PULL_BYTES && ctx.pull_data(core::cmp::min(ctx.len(), PULL_BYTES)).is_ok()
}

#[inline(always)]
fn on_segment(ctx: &TcContext, hook: u8) -> Option<()> {
    // Untraced traffic costs this much: find the ports, look them up.
    let (at, sport, dport) = match ports(ctx) {
        Some(found) => found,
        None if pull_headers(ctx) => ports(ctx)?,
        None => return None,
    };
    if !maps::port_gate(sport, dport) || !maps::family_traced(at.family) {
        return None;
    }
    let seg = match parse(ctx, &at, sport, dport) {
        Some(seg) => seg,
        None if pull_headers(ctx) => parse(ctx, &locate(ctx)?, sport, dport)?,
        None => return None,
    };
    let (key, from) = FlowKey::new(seg.family, seg.saddr, seg.sport, seg.daddr, seg.dport);
    let Some(stats) = flow_for(&key, from, &seg) else {
        // A flow the table lost (or never had): nothing to count into, but
        // its reset still tells userspace who aborted.
        if seg.flags & tcp_flag::RST != 0 {
            ship_segment(ctx, hook, &seg, &key, from, false);
        }
        return None;
    };
    flow::count(stats, from, seg.flags, seg.payload_len);
    if seg.flags & tcp_flag::SYN != 0 {
        flow::note_syn(stats, from, seg.flags, seg.seq);
    }
    ship(ctx, hook, &seg, &key, from, stats);
    Some(())
}

/// The flow's record, created by the segment that opens the connection.
/// Flows already open when the tracer started are not counted: their
/// counters would miss everything before.
#[inline(always)]
fn flow_for(key: &FlowKey, from: usize, seg: &Segment) -> Option<*mut tracer_common::FlowStats> {
    let opening = seg.flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;
    if let Some(s) = flow::FLOWS.get_ptr_mut(key) {
        if !opening || !flow::is_new_connection(s, from, seg.flags, seg.seq) {
            return Some(s);
        }
        forget_wants(key);
        return Some(flow::reset(s));
    } else if !opening {
        return None;
    }
    forget_wants(key);
    flow::open(key)
}

/// A new connection on a 4-tuple starts with the default payload budget,
/// whatever userspace asked of the last one (it deletes that entry later).
#[inline(always)]
fn forget_wants(key: &FlowKey) {
    if maps::wants_gen() != 0 {
        let _ = maps::WANTS.remove(key);
    }
}

#[inline(always)]
fn ship(ctx: &TcContext, hook: u8, seg: &Segment, key: &FlowKey, from: usize, stats: *mut tracer_common::FlowStats) {
    // SAFETY: map value pointer, checked for null.
    let marks = unsafe { (*stats).marks };
    let filtered = maps::filters() & (filter::PIDS | filter::COMMS) != 0;
    if filtered && marks & flow_mark::TRACED == 0 && marks & flow_mark::IGNORED != 0 {
        return;
    }
    // Not in the counters a close already copied: userspace adds it.
    let late = marks & flow_mark::CLOSED != 0;
    if seg.payload_len > 0
        && maps::capture_bytes() > 0
        && let Some(head) = payload_wanted(seg, key, from, stats)
    {
        ship_payload(ctx, hook, seg, key, from, head.with_handshake(stats), late);
        return;
    }
    // SYNs and FINs are in the flow's record (counts, ISNs, SYN times) and
    // the socket's states; a reset, rare, says on its own who aborted.
    let abort = seg.flags & tcp_flag::RST != 0;
    if abort || late || maps::filters() & filter::ALL_SEGMENTS != 0 {
        ship_segment(ctx, hook, seg, key, from, late);
    }
}

/// A payload head to ship: where it starts in the segment's payload, and
/// whether to wake userspace for it.
struct Head {
    off: u32,
    wake: bool,
    /// Each endpoint's `syn_seen` value and ISN, from the flow's record.
    syn: [u8; 2],
    isn: [u32; 2],
}

impl Head {
    fn new(off: u32, wake: bool) -> Self {
        Self {
            off,
            wake,
            syn: [0; 2],
            isn: [0; 2],
        }
    }

    /// What the flow's record knows of its handshake, which userspace needs
    /// to place the bytes: SYNs reach it only when every segment does.
    #[inline(always)]
    fn with_handshake(mut self, stats: *const tracer_common::FlowStats) -> Self {
        for i in 0..2 {
            // SAFETY: the flow's record, checked for null by the caller.
            let d = unsafe { &(*stats).dir[i] };
            self.syn[i] = d.has_isn as u8;
            self.isn[i] = d.isn;
        }
        self
    }
}

/// The head of this segment's payload that userspace wants, if any.
#[inline(always)]
fn payload_wanted(seg: &Segment, key: &FlowKey, from: usize, stats: *mut tracer_common::FlowStats) -> Option<Head> {
    let d = from & 1;
    let generation = maps::wants_gen();
    let wanted = if generation == 0 {
        (want::DEFAULT, 0)
    } else {
        wanted_by(key, d, stats, generation)
    };
    match wanted {
        (want::FROM, first) => {
            // Sequence numbers wrap: compare by signed distance.
            let end = seg.seq.wrapping_add(seg.payload_len);
            if end.wrapping_sub(first) as i32 <= 0 {
                return None;
            }
            let off = first.wrapping_sub(seg.seq) as i32;
            Some(Head::new(if off > 0 { off as u32 } else { 0 }, false))
        }
        (want::NONE, _) => None,
        _ => {
            // SAFETY: the flow's record, checked for null.
            let shipped = unsafe { &raw mut (*stats).dir[d].captured };
            // SAFETY: as above.
            let before = unsafe { *shipped };
            if before >= DEFAULT_HEADS {
                return None;
            }
            // Read, then added: CPUs shipping heads of one direction at once
            // (rare: a socket's sends are serialised by its lock) can each
            // ship one beyond the budget, or both miss the half-way wake-up,
            // after which the tick drains them anyway.
            flow::add32(shipped, 1);
            // Half the budget gone and userspace still silent: a long
            // exchange, whose later heads need its word before the rest is spent.
            Some(Head::new(0, before + 1 == DEFAULT_HEADS / 2))
        }
    }
}

/// Direction `d`'s (mode, first sequence number) in `WANTS`, from the flow's
/// cache while the generation holds: a bulk transfer told to ship nothing
/// pays one hash lookup per change of `WANTS`, not one per segment.
#[inline(always)]
fn wanted_by(key: &FlowKey, d: usize, stats: *mut tracer_common::FlowStats, generation: u32) -> (u8, u32) {
    // SAFETY: the flow's record, checked for null; `WantSeen` is 8-aligned.
    let seen = unsafe { (&raw mut (*stats).dir[d].want).cast::<u64>() };
    // SAFETY: as above: one load, so tag and sequence number come from one write.
    let word = unsafe { core::ptr::read_volatile(seen) };
    let (tag, seq) = (word as u32, (word >> 32) as u32);
    if tag >> 8 == generation {
        return (tag as u8, seq);
    }
    // SAFETY: a map value, read-only here.
    let (mode, from_seq) = unsafe { maps::WANTS.get(key) }.map_or((want::DEFAULT, 0), |w| (w.mode[d], w.from_seq[d]));
    // `generation` was read before the entry: had userspace changed the
    // entry since, it changes the generation after, and the next segment
    // looks again. One store, so another CPU's refresh is either all there
    // or not at all.
    let tag = generation << 8 | u32::from(mode);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(seen, u64::from(tag) | u64::from(from_seq) << 32) };
    (mode, from_seq)
}

#[inline(always)]
fn segment_event(
    ctx: &TcContext,
    hook: u8,
    seg: &Segment,
    key: &FlowKey,
    from: usize,
    k: u32,
    late: bool,
) -> SegmentEvent {
    SegmentEvent {
        header: EventHeader {
            kind: k,
            flags: 0,
            // Read only for a segment that is shipped (and a SYN, for its
            // flow's record): most are only counted, and the clock is a tenth
            // of a run. Read after the count, which the close's timing needs.
            // SAFETY: no preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        key: *key,
        seq: seg.seq,
        ack: seg.ack,
        // SAFETY: the context's skb is valid for the program's run.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        len: seg.payload_len,
        win: seg.win,
        flags: seg.flags,
        hook,
        from: from as u8,
        late: late as u8,
        captured: 0,
        head_off: 0,
        syn: [0; 2],
        _pad2: [0; 2],
        isn: [0; 2],
    }
}

#[inline(always)]
fn ship_segment(ctx: &TcContext, hook: u8, seg: &Segment, key: &FlowKey, from: usize, late: bool) {
    let Some(mut entry) = maps::EVENTS.reserve::<SegmentEvent>(0) else {
        maps::count_drop();
        return;
    };
    entry.write(segment_event(ctx, hook, seg, key, from, kind::SEGMENT, late));
    entry.submit(maps::submit_flags());
}

/// Built here, then copied to the ring buffer at its real size: reserving a
/// whole `PayloadEvent` would spend 2 KiB of ring on a 100-byte head.
#[map]
static PAYLOAD_SCRATCH: PerCpuArray<PayloadEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn ship_payload(ctx: &TcContext, hook: u8, seg: &Segment, key: &FlowKey, from: usize, head: Head, late: bool) {
    let Head { off, wake, syn, isn } = head;
    let Some(p) = PAYLOAD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let want = core::cmp::min((seg.payload_len - off) as usize, maps::capture_bytes());
    let mut captured = 0usize;
    if want > 0 && want <= MAX_CAPTURE {
        // Reloaded opaquely and masked, so the verifier sees it in
        // 1..=MAX_CAPTURE (a power of two); otherwise the compiler folds the
        // mask away and the verifier sees a possible zero.
        // SAFETY: a local's address.
        let opaque = unsafe { core::ptr::read_volatile(&want) };
        let want = ((opaque.wrapping_sub(1)) & (MAX_CAPTURE - 1)) + 1;
        // SAFETY: `p` is this CPU's scratch event and `want` fits its buffer;
        // the helper fails cleanly if the packet is shorter.
        let rc = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb.cast(),
                seg.payload_off as u32 + off,
                (*p).data.as_mut_ptr().cast(),
                want as u32,
            )
        };
        if rc == 0 {
            captured = want;
        }
    }
    let mut head = segment_event(ctx, hook, seg, key, from, kind::PAYLOAD, late);
    head.captured = captured as u16;
    head.head_off = off;
    (head.syn, head.isn) = (syn, isn);
    // SAFETY: as above; the length is bounded by the scratch event's size.
    let bytes = unsafe {
        (*p).segment = head;
        let len = size_of::<SegmentEvent>() + (captured & (MAX_CAPTURE * 2 - 1));
        core::slice::from_raw_parts(p.cast::<u8>(), core::cmp::min(len, size_of::<PayloadEvent>()))
    };
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        maps::submit_flags()
    };
    if maps::EVENTS.output::<[u8]>(bytes, flags).is_err() {
        maps::count_drop();
    }
}
