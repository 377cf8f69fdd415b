//! Who ended a connection, and how.
use tracer_common::{tcp_flag, tcp_state};

use crate::{
    connection::{CloseKind, Role, Traffic},
    state::TcpState,
};

/// `first_rst`: the sender (endpoint index) of this connection's first reset
/// that crossed the ring buffer, if one did; `local`: this socket's index.
pub fn classify(
    role: Role,
    states: &[(TcpState, u64)],
    tx: &Traffic,
    rx: &Traffic,
    first_rst: Option<usize>,
    local: usize,
) -> CloseKind {
    // Without counters (a flow the kernel's table lost), the reset that
    // crossed the ring buffer is the only evidence.
    let rx_rst = rx.with(tcp_flag::RST) > 0 || first_rst.is_some_and(|from| from != local);
    let established = states.iter().any(|s| s.0.0 == tcp_state::ESTABLISHED);
    if role == Role::Client && !established {
        return if rx_rst { CloseKind::Refused } else { CloseKind::Timeout };
    }
    if tx.with(tcp_flag::RST) + rx.with(tcp_flag::RST) > 0 || first_rst.is_some() {
        // Every RST crosses the ring buffer: the first one says who aborted.
        let local_first = first_rst.map_or(tx.with(tcp_flag::RST) > 0, |from| from == local);
        return if local_first {
            CloseKind::LocalRst
        } else {
            CloseKind::RemoteRst
        };
    }
    // The socket's own path says who sent the first FIN: FIN_WAIT1 is entered
    // by closing first (also in a simultaneous close), CLOSE_WAIT by receiving it.
    for (state, _) in states {
        match state.0 {
            tcp_state::FIN_WAIT1 => return CloseKind::LocalFin,
            tcp_state::CLOSE_WAIT => return CloseKind::RemoteFin,
            _ => {}
        }
    }
    if rx.with(tcp_flag::FIN) > 0 {
        CloseKind::RemoteFin
    } else {
        CloseKind::LocalFin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::tcp_state::*;

    fn path(states: &[u8]) -> Vec<(TcpState, u64)> {
        states
            .iter()
            .enumerate()
            .map(|(i, &s)| (TcpState(s), i as u64))
            .collect()
    }

    fn with(flag: u8, n: u64) -> Traffic {
        let mut t = Traffic::default();
        t.flags[flag.trailing_zeros() as usize] = n;
        t
    }

    #[test]
    fn fin_closes_follow_the_socket_path() {
        let none = Traffic::default();
        let active = path(&[SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]);
        let passive = path(&[SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE]);
        let simultaneous = path(&[SYN_SENT, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE]);
        assert_eq!(
            classify(Role::Client, &active, &none, &none, None, 0),
            CloseKind::LocalFin
        );
        assert_eq!(
            classify(Role::Server, &passive, &none, &none, None, 0),
            CloseKind::RemoteFin
        );
        assert_eq!(
            classify(Role::Client, &simultaneous, &none, &none, None, 0),
            CloseKind::LocalFin
        );
    }

    #[test]
    fn resets_and_refusals() {
        let none = Traffic::default();
        let refused = path(&[SYN_SENT, CLOSE]);
        assert_eq!(
            classify(Role::Client, &refused, &none, &with(tcp_flag::RST, 1), None, 0),
            CloseKind::Refused
        );
        assert_eq!(
            classify(Role::Client, &refused, &none, &none, None, 0),
            CloseKind::Timeout
        );
        let aborted = path(&[SYN_SENT, ESTABLISHED, CLOSE]);
        let rst = with(tcp_flag::RST, 1);
        assert_eq!(
            classify(Role::Client, &aborted, &rst, &none, None, 0),
            CloseKind::LocalRst
        );
        assert_eq!(
            classify(Role::Server, &aborted, &none, &rst, None, 0),
            CloseKind::RemoteRst
        );
    }
}
