//! One socket's life as it unfolds: transitions, then the close and its
//! counters, then segments that come after the close.
use tracer_common::{FlowStats, tcp_flag, tcp_state};

use crate::{
    connection::{CloseKind, Connection, Role, StateAt, Traffic},
    event::{Close, Process, Segment, StateChange},
    state::TcpState,
};

#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// The latest transition: endpoints fill in as the socket binds.
    pub last: StateChange,
    pub owner: Option<Process>,
    pub role: Option<Role>,
    /// States entered, with kernel timestamps.
    pub states: Vec<(TcpState, u64)>,
    /// Set by the close event: its timestamp. The flow's counters it carried
    /// wait beside the lifecycle in the correlator's closing queue: most of a
    /// lifecycle is spent open, and open ones must be small.
    pub closed: Option<u64>,
    /// The flow this socket counts in, once its ports are known.
    pub flow: Option<tracer_common::FlowKey>,
    /// Tells this socket from an earlier one at the same address.
    pub generation: u64,
}

/// A transition that starts a socket's life: connect, listen, or an accepted
/// socket cloned from its listener.
pub fn is_birth(s: &StateChange) -> bool {
    matches!(
        (s.old.0, s.new.0),
        (tcp_state::CLOSE, tcp_state::SYN_SENT)
            | (tcp_state::CLOSE, tcp_state::LISTEN)
            | (tcp_state::LISTEN, tcp_state::SYN_RECV)
    )
}

/// What this socket's first transition says about how it was born. Sockets
/// first seen mid-life (open before the tracer started, or evicted) get none.
fn role_of(first: &StateChange) -> Option<Role> {
    match (first.old.0, first.new.0) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) => Some(Role::Client),
        // An accepted socket is born by cloning its listener.
        (tcp_state::LISTEN, tcp_state::SYN_RECV) => Some(Role::Server),
        _ => None,
    }
}

impl Lifecycle {
    /// `states`: an empty list to fill, reused from a finished lifecycle
    /// when there is one.
    pub fn new(first: &StateChange, states: Vec<(TcpState, u64)>) -> Self {
        Self {
            last: *first,
            owner: first.owner,
            role: role_of(first),
            states,
            closed: None,
            flow: None,
            generation: 0,
        }
    }

    /// When this socket began a connection, if it was seen from its start
    /// (`s` is the transition about to be added): a client's SYN_SENT is
    /// entered before its SYN leaves, a server's SYN_RECV as the SYN arrives.
    /// A socket first seen mid-life began nothing that is known.
    pub fn began_at(&self, s: &StateChange) -> Option<u64> {
        let (state, ts) = self.states.first().copied().unwrap_or((s.new, s.ts_ns));
        matches!(state.0, tcp_state::SYN_SENT | tcp_state::SYN_RECV).then_some(ts)
    }

    pub fn is_listener(&self) -> bool {
        self.last.new.0 == tcp_state::LISTEN || self.last.old.0 == tcp_state::LISTEN && self.role.is_none()
    }

    pub fn on_state(&mut self, s: &StateChange) {
        // An owner once known is never replaced by a later guess; only an
        // accept (an `Owner` event) may correct a listener's provisional one.
        if self.owner.is_none() {
            self.owner = s.owner;
        }
        // The kernel reports some re-entries of the state a socket is in
        // (FIN_WAIT1 once from close() and again as the FIN goes out): not a change.
        let repeat = s.old == s.new && self.states.last().is_some_and(|l| l.0 == s.new);
        if self.states.len() < MAX_STATES && !repeat {
            self.states.push((s.new, s.ts_ns));
        }
        self.last = *s;
    }

    pub fn on_close(&mut self, c: &Close) {
        self.on_state(&c.state);
        self.closed = Some(c.state.ts_ns);
    }

    /// This socket's flow, once it has ports.
    pub fn key(&self) -> Option<tracer_common::FlowKey> {
        self.flow
    }

    pub fn start_ns(&self, syn_rx: Option<u64>) -> u64 {
        let first = self.states.first().map_or(self.last.ts_ns, |s| s.1);
        match self.role {
            Some(Role::Server) => syn_rx.map_or(first, |t| t.min(first)),
            _ => first,
        }
    }

    /// The record of this socket. `stats` are the flow's counters (from the
    /// close event, or read at exit); late segments stamped after
    /// `view.late_after` count on top of them. Only late ones: the classifier
    /// stamps a segment after counting it, so one it counted before the
    /// close's copy (and, not yet seeing the close's mark, did not call
    /// late) can still be stamped after the close.
    pub fn connection(&self, role: Role, view: View<'_>) -> Connection {
        let (_, local) = self.last.flow();
        let pick = |s: &FlowStats, i: usize| Traffic::from_kernel(&s.dir[i]);
        let (mut tx, mut rx) = view
            .stats
            .map_or_else(Default::default, |s| (pick(s, local), pick(s, 1 - local)));
        // Ring order is not time order across CPUs: filter, do not bisect.
        let own = |s: &Segment| view.until.is_none_or(|u| s.ts_ns < u);
        let late = |s: &&Segment| s.late && view.late_after.is_some_and(|t| s.ts_ns > t) && own(s);
        for seg in view.segments.iter().filter(late) {
            if seg.from == local { tx.add(seg) } else { rx.add(seg) }
        }
        let start = self.start_ns(view.syn_ts[1 - local]);
        let end = self.closed.unwrap_or(view.now_ns).max(start);
        // A reused 4-tuple's log can hold the last connection's reset, or the
        // next one's: only this socket's own time counts.
        let first_rst = view
            .segments
            .iter()
            .filter(|s| s.ts_ns >= start && own(s) && s.has(tcp_flag::RST))
            .min_by_key(|s| s.ts_ns)
            .map(|s| s.from);
        let close = if view.open_at_exit {
            CloseKind::OpenAtExit
        } else {
            crate::correlate::close::classify(role, &self.states, &tx, &rx, first_rst, local)
        };
        // Without counters, only a reset seen on the ring buffer says the
        // peer's FIN did not end it.
        let peer_fin = match view.stats {
            Some(_) => rx.with(tcp_flag::FIN) > 0 && rx.with(tcp_flag::RST) == 0,
            None => first_rst.is_none(),
        };
        let isn = |i: usize| view.stats.and_then(|s| (s.dir[i].has_isn != 0).then_some(s.dir[i].isn));
        Connection {
            sock: self.last.sock,
            process: self.owner.unwrap_or(self.last.current),
            role,
            family: self.last.family,
            laddr: self.last.laddr,
            lport: self.last.lport,
            raddr: self.last.raddr,
            rport: self.last.rport,
            start_ns: start,
            duration_ns: end - start,
            handshake_ns: self.established_ns().map(|t| t.saturating_sub(start)),
            states: self.timeline(start, peer_fin, close, view.timeline),
            retransmits: view.stats.map_or(0, |s| u64::from(s.dir[local].retransmits)),
            counted: view.stats.is_some(),
            tx,
            rx,
            close,
            protocol: "unknown",
            segments: Vec::new(),
            segments_omitted: 0,
            isn: (isn(local), isn(1 - local)),
            local,
            app: None,
        }
    }

    fn established_ns(&self) -> Option<u64> {
        self.states
            .iter()
            .find(|s| s.0.0 == tcp_state::ESTABLISHED)
            .map(|s| s.1)
    }

    /// The states entered, relative to `start`. The kernel reports
    /// FIN_WAIT2 -> CLOSE (or CLOSING -> CLOSE) when a socket that received the
    /// peer's FIN hands the connection over to a timewait socket: the
    /// connection itself then sits in TIME_WAIT, which is what we show.
    /// `peer_fin`: the peer's FIN arrived and no reset followed. `into`: an
    /// empty list to fill.
    fn timeline(&self, start: u64, peer_fin: bool, close: CloseKind, mut into: Vec<StateAt>) -> Vec<StateAt> {
        let handover = matches!(close, CloseKind::LocalFin)
            && peer_fin
            && self.states.len() >= 2
            && matches!(
                self.states[self.states.len() - 2].0.0,
                tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSING
            );
        let n = self.states.len();
        into.extend(self.states.iter().enumerate().map(|(i, &(state, ts))| {
            let state = if handover && i == n - 1 && state.0 == tcp_state::CLOSE {
                TcpState(tcp_state::TIME_WAIT)
            } else {
                state
            };
            StateAt {
                state,
                at_ns: ts.saturating_sub(start),
            }
        }));
        into
    }
}

/// What the correlator knows beyond the lifecycle when it builds the record.
pub struct View<'a> {
    pub stats: Option<&'a FlowStats>,
    /// When each endpoint's SYN was seen.
    pub syn_ts: [Option<u64>; 2],
    /// Segments after this time (the close whose counters `stats` are)
    /// count on top of them.
    pub late_after: Option<u64>,
    /// When the next connection on the 4-tuple began, after this socket's
    /// close: what comes from then on is not this socket's.
    pub until: Option<u64>,
    pub segments: &'a [Segment],
    pub open_at_exit: bool,
    pub now_ns: u64,
    /// An empty list for the record's timeline.
    pub timeline: Vec<StateAt>,
}

/// A socket passes through a dozen states at most; more means a bug or an
/// attack, and memory stays bounded either way.
const MAX_STATES: usize = 32;
