//! Correlation: state changes (by socket), segments (by flow) and close
//! counters joined into one lifecycle per socket, bounded in memory. A closed
//! socket is held for a short grace period, so that segments handled after
//! its close (a last ACK in softirq) still count, then emitted and forgotten.
pub mod close;
mod lifecycle;
mod reuse;

use std::collections::VecDeque;

// Hashing sits on every event's path: a fast hash, still randomly seeded
// because remote peers choose half of every flow key.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use tracer_common::{FlowKey, FlowStats, syn_seen, tcp_flag, tcp_state};

use crate::{
    connection::Connection,
    event::{Close, Event, Handshake, Process, Segment, StateChange},
    protocol::{Control, Tracker},
    state::TcpState,
};
use lifecycle::{Lifecycle, View};
use reuse::Reuse;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open sockets tracked at once; the oldest is evicted beyond it.
    pub max_sockets: usize,
    /// Segments kept per flow (for diagrams and timing); more are counted, not kept.
    pub segments_per_flow: usize,
    /// How long a closed socket waits for segments handled after its close.
    pub grace_ns: u64,
    /// Keep segments in the connection record (for `--diagram`).
    pub keep_segments: bool,
    /// Detect application protocols from payload heads.
    pub detect: bool,
}

/// A closed socket waiting out its grace period, with the counters its
/// close carried (kept here, not in the lifecycle, which must stay small).
#[derive(Debug)]
struct Closing {
    due_ns: u64,
    life: Lifecycle,
    stats: Option<FlowStats>,
}

/// Segments of one flow that crossed the ring buffer, and what is known of its
/// handshake. Without diagrams no SYN is kept as a segment (by default none
/// crosses the ring buffer at all): an open connection costs no segments.
#[derive(Debug, Default)]
struct FlowLog {
    segments: Vec<Segment>,
    /// When each endpoint's SYN was seen (endpoint index of the flow key).
    syn_ts: [Option<u64>; 2],
    /// Each endpoint's initial sequence number: from its shipped SYN, else
    /// from the kernel's copy of the handshake on a payload head.
    isn: [Option<u32>; 2],
    /// The endpoint that sent the first SYN.
    opener: Option<usize>,
    /// The flow's application protocol, once it carried payload.
    proto: Option<Box<Tracker>>,
    omitted: u64,
    /// Lifecycles attached to this flow (two on loopback).
    sockets: u32,
    last_seen_ns: u64,
    /// When the latest connections on this 4-tuple began, as far as seen (a
    /// socket that opened one claiming the flow, a SYN or payload head of a
    /// new connection), 0 for none: a closed socket's late segments and
    /// resets end where the next connection begins.
    began: [u64; BEGINNINGS],
}

/// Beginnings kept per 4-tuple, the oldest dropped first. A connection notes
/// one per local socket that opens it and one more when its SYN or first head
/// shows it new: room for the next two connections within one grace period.
const BEGINNINGS: usize = 6;

impl FlowLog {
    /// Whether a payload head's copy of the kernel's record names ISNs other
    /// than those held: a new connection on a reused 4-tuple.
    fn is_other(&self, h: &Handshake) -> bool {
        (0..2).any(|i| matches!((self.isn[i], h.isn[i]), (Some(a), Some(b)) if a != b))
    }

    /// Notes that a connection began (or that a socket joined one) at `ts`.
    fn begin(&mut self, ts: u64) {
        let oldest = (0..BEGINNINGS).min_by_key(|&i| self.began[i]).unwrap_or(0);
        self.began[oldest] = ts;
    }

    /// Where what happened after `closed` stops being that connection's: the
    /// first beginning after it.
    fn next_after(&self, closed: u64) -> Option<u64> {
        self.began.iter().copied().filter(|&t| t > closed).min()
    }

    /// Hands its lists to the next flows (once retired).
    fn release(self, spares: &mut Reuse) {
        spares.give_segments(self.segments);
        if let Some(t) = self.proto {
            spares.give_tracker(t);
        }
    }

    /// Takes the handshake from a payload head, where no SYN was shipped.
    fn learn(&mut self, h: &Handshake) {
        for i in 0..2 {
            self.isn[i] = self.isn[i].or(h.isn[i]);
        }
        self.opener = self.opener.or(h.opener);
    }
}

/// How long a flow's segments wait for a socket to claim them: a flow of an
/// untraced process (`--pid`) never gets one.
const UNCLAIMED_FLOW_NS: u64 = 2_000_000_000;
const PRUNE_EVERY_NS: u64 = 1_000_000_000;
/// Room for FIN and RST segments beyond `segments_per_flow`.
const DIALOG_ROOM: usize = 16;

#[derive(Debug)]
pub struct Correlator {
    limits: Limits,
    open: HashMap<u64, Lifecycle>,
    /// Creation order of open sockets (address, generation), oldest first,
    /// with stale entries: at most as many as live ones (and 16), so that the
    /// queue grows only with the open set.
    order: VecDeque<(u64, u64)>,
    generation: u64,
    /// When unclaimed flows were last pruned.
    pruned_ns: u64,
    closing: VecDeque<Closing>,
    /// What finished sockets, flows and printed records leave, for new ones.
    spares: Reuse,
    /// The closing transition of each socket in `closing`, to find a copy of it.
    just_closed: HashMap<u64, (TcpState, TcpState)>,
    flows: HashMap<FlowKey, FlowLog>,
    /// Listening port -> its owner: the provisional owner of the sockets it
    /// accepts, which change state in softirq before `accept` returns.
    listeners: HashMap<u16, Process>,
    pub evicted: u64,
    /// Transitions the kernel delivered twice, dropped (see `is_repeat`).
    pub repeats: u64,
    /// Sockets whose close never came: a new socket took their address
    /// first. They get no record.
    pub unfinished: u64,
    /// What the kernel should ship of each flow's payload, for the caller to apply.
    pub controls: Vec<(FlowKey, Control)>,
    /// Times protocol detection lost bytes it needed (forgotten flows only).
    pub payload_gaps: u64,
}

impl Correlator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: HashMap::default(),
            order: VecDeque::new(),
            generation: 0,
            pruned_ns: 0,
            closing: VecDeque::new(),
            spares: Reuse::new(),
            just_closed: HashMap::default(),
            flows: HashMap::default(),
            listeners: HashMap::default(),
            evicted: 0,
            repeats: 0,
            unfinished: 0,
            controls: Vec::new(),
            payload_gaps: 0,
        }
    }

    /// Listeners that existed before tracing started.
    pub fn with_listeners(mut self, listeners: impl IntoIterator<Item = (u16, Process)>) -> Self {
        self.listeners.extend(listeners);
        self
    }

    /// Fills in the owner of a state change from what is known of its socket:
    /// taken where it runs in process context (connect, listen, accept) and
    /// never from a transition that fired in softirq.
    pub fn resolve_owner(&mut self, event: &mut Event) {
        let s = match event {
            Event::State(s) => s,
            Event::Close(c) => &mut c.state,
            Event::Owner { sock, process } => {
                if let Some(life) = self.open.get_mut(sock) {
                    life.owner = Some(*process);
                }
                return;
            }
            Event::Segment(..) => return,
        };
        let (old, new) = (s.old.0, s.new.0);
        if s.owner.is_none() {
            s.owner = self.open.get(&s.sock).and_then(|l| l.owner).or_else(|| {
                (old == tcp_state::LISTEN && new == tcp_state::SYN_RECV)
                    .then(|| self.listeners.get(&s.lport).copied())
                    .flatten()
            });
        }
        match (old, new, s.owner) {
            (tcp_state::CLOSE, tcp_state::LISTEN, Some(owner)) => {
                self.listeners.insert(s.lport, owner);
            }
            // Only the listener's own owner removes it: another listener may
            // share the port (SO_REUSEPORT, another address).
            (tcp_state::LISTEN, tcp_state::CLOSE, Some(owner))
                if self.listeners.get(&s.lport).is_some_and(|l| l.pid == owner.pid) =>
            {
                self.listeners.remove(&s.lport);
            }
            _ => {}
        }
    }

    pub fn open_sockets(&self) -> usize {
        self.open.len()
    }

    /// Takes one event; finished connections go to `out`. `now_ns` is
    /// CLOCK_MONOTONIC, the kernel's time base.
    pub fn on_event(&mut self, event: &Event, now_ns: u64, out: &mut Vec<Connection>) {
        let change = match event {
            Event::State(s) => Some(s),
            Event::Close(c) => Some(&c.state),
            _ => None,
        };
        if change.is_some_and(|s| self.is_repeat(s)) {
            self.repeats += 1;
            return;
        }
        match event {
            Event::State(s) => self.on_state(s),
            Event::Close(c) => self.on_close(c, now_ns),
            Event::Segment(seg, payload) => self.on_segment(seg, *payload, now_ns),
            Event::Owner { .. } => {}
        }
        self.tick(now_ns, out);
    }

    /// The kernel's second copy of the state program can deliver a transition
    /// the first copy also took (when several nested transitions on one CPU
    /// push it out of the first copy's notes). Only its events can be copies,
    /// and a socket never makes the same change twice in a row, so such an
    /// event that repeats the socket's last change is a copy. The copy arrives
    /// after the nested transitions, but never after the socket's own next
    /// one: a transition in process context holds the socket's lock, which
    /// sends its packets to the backlog until the transition is done. A birth
    /// repeats only while it is all the socket has done: otherwise the
    /// address belongs to a new socket, whose predecessor's close was lost.
    fn is_repeat(&self, s: &StateChange) -> bool {
        if !s.recovered || s.old == s.new {
            return false;
        }
        match self.open.get(&s.sock) {
            Some(life) => {
                (life.last.old, life.last.new) == (s.old, s.new) && (!lifecycle::is_birth(s) || life.states.len() == 1)
            }
            None => self.just_closed.get(&s.sock) == Some(&(s.old, s.new)),
        }
    }

    /// Unless a younger socket at the same address closed since.
    fn forget_closed(&mut self, life: &Lifecycle) {
        if self.just_closed.get(&life.last.sock) == Some(&(life.last.old, life.last.new)) {
            self.just_closed.remove(&life.last.sock);
        }
    }

    fn lifecycle(&mut self, s: &StateChange) -> &mut Lifecycle {
        // A birth at an address we still hold means the previous socket's
        // close was lost (a full ring buffer, counted as a drop): the address
        // now belongs to a new socket, which must not inherit the old life.
        if lifecycle::is_birth(s)
            && let Some(stale) = self.open.remove(&s.sock)
        {
            self.unfinished += 1;
            self.detach(&stale);
            self.recycle(stale);
        }
        if !self.open.contains_key(&s.sock) {
            if self.open.len() >= self.limits.max_sockets {
                self.evict_oldest();
            }
            self.generation += 1;
            let states = self.spares.states();
            let mut life = Lifecycle::new(s, states);
            life.generation = self.generation;
            self.open.insert(s.sock, life);
            self.order.push_back((s.sock, self.generation));
            if self.order.len() > 2 * self.open.len() + 16 {
                let open = &self.open;
                self.order
                    .retain(|(sock, g)| open.get(sock).is_some_and(|l| l.generation == *g));
            }
        }
        self.open.get_mut(&s.sock).expect("inserted above")
    }

    /// Evicts the oldest open socket; entries for sockets gone since (or
    /// whose address a younger socket took) are skipped.
    fn evict_oldest(&mut self) {
        while let Some((sock, g)) = self.order.pop_front() {
            if self.open.get(&sock).is_some_and(|l| l.generation == g) {
                let life = self.open.remove(&sock).expect("checked above");
                self.detach(&life);
                self.recycle(life);
                self.evicted += 1;
                return;
            }
        }
    }

    /// The socket's lifecycle, attached to its flow once its ports are known.
    fn track(&mut self, s: &StateChange) -> &mut Lifecycle {
        let (claim, began) = {
            let life = self.lifecycle(s);
            let claim = (life.flow.is_none() && s.lport != 0 && s.rport != 0).then(|| s.flow().0);
            (claim, life.began_at(s))
        };
        if let Some(key) = claim {
            let log = self.flows.entry(key).or_default();
            log.sockets += 1;
            if let Some(t) = began {
                log.begin(t);
            }
        }
        let life = self.open.get_mut(&s.sock).expect("tracked just now");
        life.flow = life.flow.or(claim);
        life
    }

    fn on_state(&mut self, s: &StateChange) {
        self.track(s).on_state(s);
    }

    fn on_close(&mut self, c: &Close, now_ns: u64) {
        self.track(&c.state).on_close(c);
        if let Some(life) = self.open.remove(&c.state.sock) {
            self.just_closed.insert(c.state.sock, (c.state.old, c.state.new));
            self.closing.push_back(Closing {
                due_ns: now_ns + self.limits.grace_ns,
                life,
                stats: c.stats,
            });
        }
    }

    fn on_segment(&mut self, seg: &Segment, payload: Option<&[u8]>, now_ns: u64) {
        let opening = seg.flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;
        let log = self.flows.entry(seg.key).or_default();
        let (controls, gaps, spares) = (&mut self.controls, &mut self.payload_gaps, &mut self.spares);
        if opening && log.sockets == 0 && (!log.segments.is_empty() || log.proto.is_some()) {
            // A new connection on a 4-tuple whose last one is gone.
            let old = std::mem::take(log);
            controls.extend(retire(seg.key, &old, gaps));
            old.release(spares);
        } else if opening && log.isn[seg.from].is_some_and(|isn| isn != seg.seq) || log.is_other(&seg.handshake) {
            // Reused while the last one's sockets are still held: its bytes
            // are another conversation.
            let old = log.proto.take();
            controls.extend(retire_tracker(seg.key, old.as_deref(), gaps));
            if let Some(t) = old {
                spares.give_tracker(t);
            }
            (log.isn, log.syn_ts, log.opener) = Default::default();
            log.begin(seg.ts_ns);
        }
        log.last_seen_ns = now_ns;
        log.learn(&seg.handshake);
        if seg.has(tcp_flag::SYN) {
            log.syn_ts[seg.from].get_or_insert(seg.ts_ns);
            log.isn[seg.from].get_or_insert(seg.seq);
            if opening {
                log.opener.get_or_insert(seg.from);
            }
        }
        if let Some(bytes) = payload.filter(|_| self.limits.detect) {
            let keep_marks = self.limits.keep_segments;
            let proto = log.proto.get_or_insert_with(|| {
                let t = Tracker::new(log.opener.unwrap_or(seg.from), log.isn);
                spares.tracker(if keep_marks { t.with_marks() } else { t })
            });
            // Data on a SYN (TCP Fast Open) starts after the SYN's own sequence number.
            let syn = u32::from(seg.has(tcp_flag::SYN));
            let at = seg.seq.wrapping_add(syn).wrapping_add(seg.head_off);
            let len = seg.len.saturating_sub(seg.head_off);
            if let Some(c) = proto.on_payload(seg.from, at, bytes, len, seg.ts_ns) {
                self.controls.push((seg.key, c));
            }
        }
        if seg.has(tcp_flag::SYN) && !self.limits.keep_segments {
            return;
        }
        // FINs and RSTs decide the close and its late counts: they get room
        // beyond the cap, itself bounded.
        let dialog = seg.has(tcp_flag::FIN | tcp_flag::RST);
        // Without a diagram, only what the record needs is kept: payload
        // heads live on in the tracker, and must not crowd out late segments.
        if !(self.limits.keep_segments || dialog || seg.late) {
            return;
        }
        let cap = self.limits.segments_per_flow + if dialog { DIALOG_ROOM } else { 0 };
        if log.segments.len() < cap {
            if log.segments.capacity() == 0 {
                log.segments = spares.segments();
            }
            // The payload lives on in the protocol tracker only.
            log.segments.push(*seg);
        } else {
            log.omitted += 1;
        }
    }

    /// When the next closed socket's grace period ends, if one is waiting.
    pub fn next_due_ns(&self) -> Option<u64> {
        self.closing.front().map(|c| c.due_ns)
    }

    /// Emits the closed sockets whose grace period is over, and forgets flows
    /// that no socket claimed.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Connection>) {
        while self.closing.front().is_some_and(|c| c.due_ns <= now_ns) {
            let Closing { life, stats, .. } = self.closing.pop_front().unwrap();
            self.forget_closed(&life);
            self.finish(life, stats.as_ref(), false, now_ns, out);
        }
        // Flows no socket claimed (other processes' under --pid, scans): pruned
        // at most once a second, and beyond the cap even when young. A second
        // either way: a recording replayed again (the bench) goes back in time.
        let over = self.flows.len() > 4 * self.limits.max_sockets;
        if over || now_ns.abs_diff(self.pruned_ns) > PRUNE_EVERY_NS {
            self.pruned_ns = now_ns;
            let before = self.flows.len();
            let (controls, gaps, spares) = (&mut self.controls, &mut self.payload_gaps, &mut self.spares);
            self.flows.retain(|key, f| {
                let keep = f.sockets > 0 || (!over && now_ns.saturating_sub(f.last_seen_ns) < UNCLAIMED_FLOW_NS);
                if !keep {
                    controls.extend(retire(*key, f, gaps));
                    std::mem::take(f).release(spares);
                }
                keep
            });
            if over {
                self.evicted += (before - self.flows.len()) as u64;
            }
        }
    }

    /// At exit: every closed socket is final now, and every open one is
    /// reported as `open_at_exit` with its flow's counters as `read` finds them.
    pub fn flush(&mut self, now_ns: u64, read: impl Fn(&FlowKey) -> Option<FlowStats>, out: &mut Vec<Connection>) {
        while let Some(Closing { life, stats, .. }) = self.closing.pop_front() {
            self.forget_closed(&life);
            self.finish(life, stats.as_ref(), false, now_ns, out);
        }
        let mut open: Vec<Lifecycle> = self.open.drain().map(|(_, l)| l).collect();
        open.sort_by_key(|l| l.states.first().map_or(l.last.ts_ns, |s| s.1));
        for life in open {
            let stats = life.key().as_ref().and_then(&read);
            self.finish(life, stats.as_ref(), true, now_ns, out);
        }
    }

    /// `stats`: the flow's counters at the close, or as read at exit for a
    /// socket still open (`open_at_exit`).
    fn finish(
        &mut self,
        life: Lifecycle,
        stats: Option<&FlowStats>,
        open_at_exit: bool,
        now_ns: u64,
        out: &mut Vec<Connection>,
    ) {
        let record = match (life.role, life.is_listener()) {
            (Some(role), false) => Some(self.record(&life, role, stats, open_at_exit, now_ns)),
            _ => None,
        };
        self.detach(&life);
        self.recycle(life);
        out.extend(record);
    }

    fn record(
        &mut self,
        life: &Lifecycle,
        role: crate::connection::Role,
        stats: Option<&FlowStats>,
        open_at_exit: bool,
        now_ns: u64,
    ) -> Connection {
        let log = life.key().and_then(|k| self.flows.get(&k));
        let segments = log.map_or(&[][..], |l| &l.segments[..]);
        // Segments after the close are not in its counters: they count on top.
        let late_after = life.closed.filter(|_| stats.is_some());
        let until = life.closed.and_then(|c| log.and_then(|l| l.next_after(c)));
        let mut conn = life.connection(
            role,
            View {
                stats,
                syn_ts: syn_times(log.map_or([None; 2], |l| l.syn_ts), stats),
                late_after,
                until,
                segments,
                open_at_exit,
                now_ns,
                timeline: self.spares.timeline(),
            },
        );
        if let Some(t) = log.and_then(|l| l.proto.as_deref()) {
            let summary = t.summary();
            conn.protocol = summary.protocol;
            conn.app = Some(self.spares.app(summary, t.side_of(conn.local), t.marks()));
        }
        if self.limits.keep_segments {
            conn.segments = self.spares.segments();
            conn.segments.extend_from_slice(segments);
            conn.segments_omitted = log.map_or(0, |l| l.omitted);
        }
        conn
    }

    /// Keeps a finished lifecycle's state list for the next socket: a storm
    /// then allocates none.
    fn recycle(&mut self, life: Lifecycle) {
        self.spares.give_states(life.states);
    }

    /// Takes back what a record holds once it is printed, for the next ones.
    pub fn reuse(&mut self, c: Connection) {
        self.spares.give_record(c);
    }

    fn detach(&mut self, life: &Lifecycle) {
        let Some(key) = life.key() else { return };
        if let Some(log) = self.flows.get_mut(&key) {
            log.sockets = log.sockets.saturating_sub(1);
            if log.sockets == 0
                && let Some(gone) = self.flows.remove(&key)
            {
                self.controls.extend(retire(key, &gone, &mut self.payload_gaps));
                gone.release(&mut self.spares);
            }
        }
    }
}

/// When each endpoint's SYN was seen: from its shipped SYN, else from the
/// kernel's record (SYNs are shipped only when every segment is).
fn syn_times(shipped: [Option<u64>; 2], stats: Option<&FlowStats>) -> [Option<u64>; 2] {
    [0, 1].map(|i| {
        shipped[i].or_else(|| {
            stats
                .map(|s| &s.dir[i])
                .filter(|d| d.has_isn != syn_seen::NO)
                .map(|d| d.syn_ts)
        })
    })
}

/// The kernel instruction that forgets a flow's payload requests, if it had
/// any; the flow's lost payload is added to `gaps`.
fn retire(key: FlowKey, log: &FlowLog, gaps: &mut u64) -> Option<(FlowKey, Control)> {
    retire_tracker(key, log.proto.as_deref(), gaps)
}

fn retire_tracker(key: FlowKey, t: Option<&Tracker>, gaps: &mut u64) -> Option<(FlowKey, Control)> {
    let t = t?;
    *gaps += t.gaps;
    t.retire().map(|c| (key, c))
}

#[cfg(test)]
mod tests {
    use tracer_common::tcp_state::*;

    use super::*;
    use crate::event::Close;
    use crate::output::tests::change;

    fn correlator() -> Correlator {
        Correlator::new(Limits {
            max_sockets: 16,
            segments_per_flow: 16,
            grace_ns: 1_000,
            keep_segments: false,
            detect: false,
        })
    }

    /// A shipped SYN's time wins; without one, the kernel's record gives the
    /// time of a direction whose SYN it saw, and nothing where it saw none.
    #[test]
    fn syn_times_come_from_shipped_syns_then_the_flow_record() {
        let mut stats = FlowStats::default();
        stats.dir[0].has_isn = syn_seen::OPENER;
        stats.dir[0].syn_ts = 100;
        stats.dir[1].syn_ts = 999;
        assert_eq!(syn_times([None, None], Some(&stats)), [Some(100), None]);
        assert_eq!(syn_times([Some(90), None], Some(&stats)), [Some(90), None]);
        stats.dir[1].has_isn = syn_seen::ANSWER;
        assert_eq!(syn_times([None, Some(150)], Some(&stats)), [Some(100), Some(150)]);
        assert_eq!(syn_times([None, None], Some(&stats)), [Some(100), Some(999)]);
        assert_eq!(syn_times([None, Some(7)], None), [None, Some(7)]);
    }

    /// The kernel's two copies of the state program can both deliver one
    /// transition: the copy is dropped and counted, open or just closed, and
    /// the socket has one record.
    #[test]
    fn a_transition_delivered_twice_counts_once() {
        let mut c = correlator();
        let mut out = Vec::new();
        let life = [(CLOSE, SYN_SENT), (SYN_SENT, ESTABLISHED), (ESTABLISHED, ESTABLISHED)];
        for (old, new) in life {
            let s = change("127.0.0.1", "127.0.0.1", old, new);
            c.on_event(&Event::State(s), 10, &mut out);
            c.on_event(&Event::State(recovered(s)), 10, &mut out);
        }
        let close = change("127.0.0.1", "127.0.0.1", ESTABLISHED, CLOSE);
        for state in [close, recovered(close)] {
            c.on_event(&Event::Close(Close { state, stats: None }), 20, &mut out);
        }
        c.tick(2_000, &mut out);
        // ESTABLISHED -> ESTABLISHED is the kernel's own re-entry, not a copy.
        assert_eq!((c.repeats, c.unfinished), (3, 0));
        assert_eq!(out.len(), 1, "{out:?}");
        let states: Vec<u8> = out[0].states.iter().map(|s| s.state.0).collect();
        assert_eq!(states, [SYN_SENT, ESTABLISHED, CLOSE]);
    }

    fn recovered(s: StateChange) -> StateChange {
        StateChange { recovered: true, ..s }
    }

    /// A socket whose close never came, its address taken by a new socket:
    /// no record for it, but counted.
    #[test]
    fn a_socket_whose_close_never_came_is_counted() {
        let mut c = correlator();
        let mut out = Vec::new();
        for (old, new) in [(CLOSE, SYN_SENT), (SYN_SENT, ESTABLISHED), (CLOSE, SYN_SENT)] {
            c.on_event(&Event::State(change("127.0.0.1", "127.0.0.1", old, new)), 10, &mut out);
        }
        assert_eq!((c.unfinished, c.open_sockets()), (1, 1));
    }

    /// Without SYNs on the ring buffer, a payload head's copy of the flow's
    /// handshake gives the ISNs and the opener; other ISNs on the same
    /// 4-tuple are a new connection, whose handshake replaces the old one.
    #[test]
    fn payload_heads_carry_the_handshake_and_tell_a_reused_tuple_apart() {
        let mut c = Correlator::new(Limits {
            detect: true,
            ..correlator().limits
        });
        let mut out = Vec::new();
        let s = change("127.0.0.1", "127.0.0.1", SYN_SENT, ESTABLISHED);
        c.on_event(&Event::State(s), 10, &mut out);
        let (key, local) = s.flow();
        let head = |isn: [u32; 2]| Segment {
            win: 512,
            ..payload_head(key, 20, local, local, isn, 18)
        };
        let request = Some(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        c.on_event(&Event::Segment(head([1000, 5000]), request), 20, &mut out);
        let log = &c.flows[&key];
        assert_eq!((log.isn, log.opener), ([Some(1000), Some(5000)], Some(local)));
        assert!(log.proto.is_some());
        c.on_event(&Event::Segment(head([7000, 9000]), request), 30, &mut out);
        assert_eq!(c.flows[&key].isn, [Some(7000), Some(9000)]);
    }

    /// The first payload head sent by endpoint `from` of `key`, `len` bytes,
    /// carrying the kernel's copy of the handshake (`opener`'s, ISNs `isn`).
    fn payload_head(key: FlowKey, ts_ns: u64, from: usize, opener: usize, isn: [u32; 2], len: u32) -> Segment {
        Segment {
            seq: isn[from].wrapping_add(1),
            len,
            handshake: Handshake {
                isn: isn.map(Some),
                opener: Some(opener),
            },
            ..segment(key, ts_ns, from, tcp_flag::PSH | tcp_flag::ACK)
        }
    }

    /// A segment without payload sent by endpoint `from` of `key`, as the
    /// classifier ships it.
    fn segment(key: FlowKey, ts_ns: u64, from: usize, flags: u8) -> Segment {
        Segment {
            ts_ns,
            key,
            from,
            seq: 1,
            ack: 0,
            ifindex: 1,
            hook: crate::event::Hook::Egress,
            flags,
            win: 0,
            len: 0,
            head_off: 0,
            late: false,
            handshake: Handshake::default(),
        }
    }

    /// A 4-tuple reused while the last connection's socket waits out its
    /// grace period: the log still holds that connection's reset, which must
    /// not decide who aborted the new one.
    #[test]
    fn a_reused_tuple_is_judged_by_its_own_reset() {
        let mut c = correlator();
        let mut out = Vec::new();
        let (key, local) = change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT).flow();
        let rst = |ts_ns: u64, from: usize| segment(key, ts_ns, from, tcp_flag::RST);
        let mut stats = FlowStats::default();
        let mut life = |sock: u64, t: u64, rst_from: usize, out: &mut Vec<Connection>| {
            let at = |old, new, dt| StateChange {
                sock,
                ts_ns: t + dt,
                ..change("127.0.0.1", "127.0.0.1", old, new)
            };
            c.on_event(&Event::State(at(CLOSE, SYN_SENT, 0)), t, out);
            c.on_event(&Event::State(at(SYN_SENT, ESTABLISHED, 10)), t + 10, out);
            c.on_event(&Event::Segment(rst(t + 50, rst_from), None), t + 50, out);
            stats.dir[rst_from].flags[2] = 1;
            let close = Close {
                state: at(ESTABLISHED, CLOSE, 60),
                stats: Some(stats),
            };
            c.on_event(&Event::Close(close), t + 60, out);
        };
        life(1, 100, 1 - local, &mut out);
        life(2, 500, local, &mut out);
        c.tick(10_000, &mut out);
        let close = |sock| out.iter().find(|r| r.sock == sock).map(|r| r.close);
        assert_eq!(close(1), Some(crate::connection::CloseKind::RemoteRst));
        assert_eq!(close(2), Some(crate::connection::CloseKind::LocalRst));
    }

    /// The next connection on a 4-tuple, begun while the last one's socket
    /// waits out its grace period: its reset is neither a late segment of
    /// the last one nor the last one's abort.
    #[test]
    fn the_next_connection_on_a_tuple_is_not_the_last_ones_late_traffic() {
        let mut c = correlator();
        let mut out = Vec::new();
        let (key, local) = change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT).flow();
        let at = |sock, ts_ns, old, new| StateChange {
            sock,
            ts_ns,
            ..change("127.0.0.1", "127.0.0.1", old, new)
        };
        let mut stats = FlowStats::default();
        for d in &mut stats.dir {
            (d.packets, d.flags[0]) = (3, 1);
        }
        let first = [
            (CLOSE, SYN_SENT, 100),
            (SYN_SENT, ESTABLISHED, 110),
            (ESTABLISHED, FIN_WAIT1, 140),
            (FIN_WAIT1, FIN_WAIT2, 145),
        ];
        for (old, new, ts) in first {
            c.on_event(&Event::State(at(1, ts, old, new)), ts, &mut out);
        }
        let close = Close {
            state: at(1, 160, FIN_WAIT2, CLOSE),
            stats: Some(stats),
        };
        c.on_event(&Event::Close(close), 160, &mut out);
        // The next connection, from the same port, within the grace period:
        // refused, its socket names its port only as it closes.
        let connect = StateChange {
            lport: 0,
            ..at(2, 500, CLOSE, SYN_SENT)
        };
        c.on_event(&Event::State(connect), 500, &mut out);
        let reset = segment(key, 550, 1 - local, tcp_flag::RST);
        c.on_event(&Event::Segment(reset, None), 550, &mut out);
        let refused = Close {
            state: at(2, 560, SYN_SENT, CLOSE),
            stats: None,
        };
        c.on_event(&Event::Close(refused), 560, &mut out);
        c.tick(2_000, &mut out);
        let record = |sock| out.iter().find(|r| r.sock == sock).expect("a record per socket");
        let r = record(1);
        assert_eq!(r.close, crate::connection::CloseKind::LocalFin);
        assert_eq!((r.rx.packets, r.rx.with(tcp_flag::RST)), (3, 0));
        assert_eq!(r.states.last().map(|s| s.state.0), Some(TIME_WAIT));
        assert_eq!(record(2).close, crate::connection::CloseKind::Refused);
    }

    /// After a close, only segments the classifier called late count on top
    /// of the close's copy: a reset it counted before the copy, stamped after
    /// the close (it stamps after counting), is already in the copy.
    #[test]
    fn only_late_segments_count_on_top_of_a_close() {
        let mut c = correlator();
        let mut out = Vec::new();
        let (key, local) = change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT).flow();
        let at = |ts_ns, old, new| StateChange {
            sock: 1,
            ts_ns,
            ..change("127.0.0.1", "127.0.0.1", old, new)
        };
        for (old, new, ts) in [(CLOSE, SYN_SENT, 100), (SYN_SENT, ESTABLISHED, 110)] {
            c.on_event(&Event::State(at(ts, old, new)), ts, &mut out);
        }
        let mut stats = FlowStats::default();
        stats.dir[1 - local].packets = 4;
        stats.dir[1 - local].flags[2] = 1;
        let close = Close {
            state: at(200, ESTABLISHED, CLOSE),
            stats: Some(stats),
        };
        c.on_event(&Event::Close(close), 200, &mut out);
        let counted = segment(key, 210, 1 - local, tcp_flag::RST);
        c.on_event(&Event::Segment(counted, None), 210, &mut out);
        let late = Segment {
            late: true,
            ..segment(key, 220, 1 - local, tcp_flag::ACK)
        };
        c.on_event(&Event::Segment(late, None), 220, &mut out);
        c.tick(10_000, &mut out);
        let r = out.iter().find(|r| r.sock == 1).expect("the socket's record");
        assert_eq!(r.rx.packets, 5);
        assert_eq!((r.rx.with(tcp_flag::RST), r.rx.with(tcp_flag::ACK)), (1, 1));
    }

    /// One client connection, `sock`, from `t`: its states, then `request`
    /// and `response` as one payload head each, then its close after the
    /// grace period. Returns its record.
    fn exchange(c: &mut Correlator, sock: u64, t: u64, states: &[(u8, u8)], bytes: [&[u8]; 2]) -> Connection {
        let mut out = Vec::new();
        let at = |i: u64, (old, new): (u8, u8)| StateChange {
            sock,
            ts_ns: t + i,
            ..change("127.0.0.1", "127.0.0.1", old, new)
        };
        let (key, local) = at(0, (CLOSE, SYN_SENT)).flow();
        let isn = [1000, 5000];
        let (last, lived) = states.split_last().expect("a close");
        for (i, &s) in lived.iter().enumerate() {
            c.on_event(&Event::State(at(i as u64, s)), t, &mut out);
            if i == 1 {
                for (from, data) in [(local, bytes[0]), (1 - local, bytes[1])] {
                    let head = payload_head(key, t + 5, from, local, isn, data.len() as u32);
                    c.on_event(&Event::Segment(head, Some(data)), t + 5, &mut out);
                }
            }
        }
        let close = Close {
            state: at(states.len() as u64, *last),
            stats: Some(FlowStats::default()),
        };
        c.on_event(&Event::Close(close), t + 10, &mut out);
        c.tick(t + 10_000, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop().unwrap()
    }

    /// Lists and boxes of printed records and forgotten flows are reused:
    /// the record made from them is the one a fresh correlator makes.
    #[test]
    fn a_record_made_from_spares_carries_nothing_of_the_last() {
        let detecting = || {
            Correlator::new(Limits {
                detect: true,
                ..correlator().limits
            })
        };
        let mut c = detecting();
        let long = [
            (CLOSE, SYN_SENT),
            (SYN_SENT, ESTABLISHED),
            (ESTABLISHED, FIN_WAIT1),
            (FIN_WAIT1, FIN_WAIT2),
            (FIN_WAIT2, CLOSE),
        ];
        let two: [&[u8]; 2] = [
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ];
        let first = exchange(&mut c, 1, 100, &long, two);
        assert_eq!(
            first
                .app
                .as_ref()
                .and_then(|a| a.summary.http.as_ref())
                .map(|h| h.requests.len()),
            Some(2)
        );
        let kept = (first.states.as_ptr(), first.app.as_deref().map(std::ptr::from_ref));
        c.reuse(first);
        let short = [(CLOSE, SYN_SENT), (SYN_SENT, ESTABLISHED), (ESTABLISHED, CLOSE)];
        let one: [&[u8]; 2] = [
            b"POST /c HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ];
        let reused = exchange(&mut c, 2, 20_000, &short, one);
        let fresh = exchange(&mut detecting(), 2, 20_000, &short, one);
        assert_eq!(
            (reused.states.as_ptr(), reused.app.as_deref().map(std::ptr::from_ref)),
            kept,
            "spares reused"
        );
        assert_eq!(reused, fresh);
        let http = reused.app.as_ref().and_then(|a| a.summary.http.as_ref()).expect("http");
        assert_eq!(
            http.requests.iter().map(|r| (&*r.path, r.status)).collect::<Vec<_>>(),
            [("/c", Some(404))]
        );
    }

    /// A client's birth is the same for every socket at one address (its port
    /// is bound later): one the first copy shipped is a new socket, not a copy,
    /// even when the socket before it was never heard of again.
    #[test]
    fn an_identical_birth_from_the_first_copy_is_a_new_socket() {
        let mut c = correlator();
        let mut out = Vec::new();
        let birth = change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT);
        for s in [birth, birth, recovered(birth)] {
            c.on_event(&Event::State(s), 10, &mut out);
        }
        assert_eq!((c.unfinished, c.repeats, c.open_sockets()), (1, 1, 1));
    }
}
