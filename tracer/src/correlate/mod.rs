//! Correlation: state changes (by socket), segments (by flow) and close
//! counters joined into one lifecycle per socket, bounded in memory. A closed
//! socket is held for a short grace period, so that segments handled after
//! its close (a last ACK in softirq) still count, then emitted and forgotten.
pub mod close;
mod lifecycle;

use std::collections::VecDeque;

// Hashing sits on every event's path: a fast hash, still randomly seeded
// because remote peers choose half of every flow key.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use tracer_common::{FlowKey, FlowStats, tcp_flag, tcp_state};

use crate::{
    connection::Connection,
    event::{Close, Event, Process, Segment, StateChange},
};
use lifecycle::{Lifecycle, View};

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
}

/// Segments of one flow that crossed the ring buffer. Without diagrams, SYNs
/// are remembered only by time: an open connection then costs no segments.
#[derive(Debug, Default)]
struct FlowLog {
    segments: Vec<Segment>,
    /// When each endpoint's SYN was seen (endpoint index of the flow key).
    syn_ts: [Option<u64>; 2],
    omitted: u64,
    /// Lifecycles attached to this flow (two on loopback).
    sockets: u32,
    last_seen_ns: u64,
}

/// How long a flow's segments wait for a socket to claim them: a flow of an
/// untraced process (`--pid`) never gets one.
const UNCLAIMED_FLOW_NS: u64 = 2_000_000_000;

#[derive(Debug)]
pub struct Correlator {
    limits: Limits,
    open: HashMap<u64, Lifecycle>,
    /// Creation order of open sockets, oldest first (with stale entries).
    order: VecDeque<u64>,
    closing: VecDeque<(u64, Lifecycle)>,
    flows: HashMap<FlowKey, FlowLog>,
    /// Listening port -> its owner: the provisional owner of the sockets it
    /// accepts, which change state in softirq before `accept` returns.
    listeners: HashMap<u16, Process>,
    pub evicted: u64,
}

impl Correlator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: HashMap::default(),
            order: VecDeque::new(),
            closing: VecDeque::new(),
            flows: HashMap::default(),
            listeners: HashMap::default(),
            evicted: 0,
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
            Event::Segment(_) => return,
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
            (tcp_state::LISTEN, tcp_state::CLOSE, _) => {
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
        match event {
            Event::State(s) => self.on_state(s),
            Event::Close(c) => self.on_close(c, now_ns),
            Event::Segment(seg) => self.on_segment(seg, now_ns),
            Event::Owner { .. } => {}
        }
        self.tick(now_ns, out);
    }

    fn lifecycle(&mut self, s: &StateChange) -> &mut Lifecycle {
        if !self.open.contains_key(&s.sock) {
            if self.open.len() >= self.limits.max_sockets {
                self.evict_oldest();
            }
            self.order.push_back(s.sock);
            if self.order.len() > 2 * self.limits.max_sockets + 16 {
                let open = &self.open;
                self.order.retain(|sock| open.contains_key(sock));
            }
        }
        self.open.entry(s.sock).or_insert_with(|| Lifecycle::new(s))
    }

    fn evict_oldest(&mut self) {
        while let Some(sock) = self.order.pop_front() {
            if let Some(life) = self.open.remove(&sock) {
                self.detach(&life);
                self.evicted += 1;
                return;
            }
        }
    }

    /// The socket's lifecycle, attached to its flow once its ports are known.
    fn track(&mut self, s: &StateChange) -> &mut Lifecycle {
        let claim = {
            let life = self.lifecycle(s);
            !life.claimed && s.lport != 0 && s.rport != 0
        };
        if claim {
            self.flows.entry(s.flow().0).or_default().sockets += 1;
        }
        let life = self.open.get_mut(&s.sock).expect("tracked just now");
        life.claimed |= claim;
        life
    }

    fn on_state(&mut self, s: &StateChange) {
        self.track(s).on_state(s);
    }

    fn on_close(&mut self, c: &Close, now_ns: u64) {
        self.track(&c.state).on_close(c);
        if let Some(life) = self.open.remove(&c.state.sock) {
            self.closing.push_back((now_ns + self.limits.grace_ns, life));
        }
    }

    fn on_segment(&mut self, seg: &Segment, now_ns: u64) {
        let opening = seg.flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;
        let log = self.flows.entry(seg.key).or_default();
        if opening && log.sockets == 0 && !log.segments.is_empty() {
            // A new connection on a 4-tuple whose last one is gone.
            *log = FlowLog::default();
        }
        log.last_seen_ns = now_ns;
        if seg.has(tcp_flag::SYN) {
            log.syn_ts[seg.from].get_or_insert(seg.ts_ns);
            if !self.limits.keep_segments {
                return;
            }
        }
        if log.segments.len() < self.limits.segments_per_flow {
            log.segments.push(seg.clone());
        } else {
            log.omitted += 1;
        }
    }

    /// Emits the closed sockets whose grace period is over, and forgets flows
    /// that no socket claimed.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Connection>) {
        while self.closing.front().is_some_and(|(due, _)| *due <= now_ns) {
            let (_, life) = self.closing.pop_front().unwrap();
            self.finish(life, None, now_ns, out);
        }
        if self.flows.len() > 4 * self.limits.max_sockets {
            self.flows
                .retain(|_, f| f.sockets > 0 || now_ns.saturating_sub(f.last_seen_ns) < UNCLAIMED_FLOW_NS);
        }
    }

    /// At exit: every closed socket is final now, and every open one is
    /// reported as `open_at_exit` with its flow's counters as `read` finds them.
    pub fn flush(&mut self, now_ns: u64, read: impl Fn(&FlowKey) -> Option<FlowStats>, out: &mut Vec<Connection>) {
        while let Some((_, life)) = self.closing.pop_front() {
            self.finish(life, None, now_ns, out);
        }
        let mut open: Vec<Lifecycle> = self.open.drain().map(|(_, l)| l).collect();
        open.sort_by_key(|l| l.states.first().map_or(l.last.ts_ns, |s| s.1));
        for life in open {
            let stats = life.key().as_ref().and_then(&read);
            self.finish(life, Some(stats), now_ns, out);
        }
    }

    /// `at_exit`: the socket is still open, with these counters.
    fn finish(&mut self, life: Lifecycle, at_exit: Option<Option<FlowStats>>, now_ns: u64, out: &mut Vec<Connection>) {
        let record = match (life.role, life.is_listener()) {
            (Some(role), false) => Some(self.record(&life, role, at_exit, now_ns)),
            _ => None,
        };
        self.detach(&life);
        out.extend(record);
    }

    fn record(
        &self,
        life: &Lifecycle,
        role: crate::connection::Role,
        at_exit: Option<Option<FlowStats>>,
        now_ns: u64,
    ) -> Connection {
        let log = life.key().and_then(|k| self.flows.get(&k));
        let segments = log.map_or(&[][..], |l| &l.segments[..]);
        let stats = match &at_exit {
            Some(s) => s.as_ref(),
            None => life.closed.as_ref().and_then(|c| c.1.as_deref()),
        };
        let close_ts = life.closed.as_ref().map(|c| c.0);
        let first_late = close_ts.map_or(segments.len(), |t| segments.partition_point(|s| s.ts_ns <= t));
        let late = if stats.is_some() {
            &segments[first_late..]
        } else {
            &[][..]
        };
        let mut conn = life.connection(
            role,
            View {
                stats,
                syn_ts: log.map_or([None; 2], |l| l.syn_ts),
                late,
                segments,
                open_at_exit: at_exit.is_some(),
                now_ns,
            },
        );
        if self.limits.keep_segments {
            conn.segments = segments.to_vec();
            conn.segments_omitted = log.map_or(0, |l| l.omitted);
        }
        conn
    }

    fn detach(&mut self, life: &Lifecycle) {
        let Some(key) = life.key() else { return };
        if let Some(log) = self.flows.get_mut(&key) {
            log.sockets = log.sockets.saturating_sub(1);
            if log.sockets == 0 {
                self.flows.remove(&key);
            }
        }
    }
}
