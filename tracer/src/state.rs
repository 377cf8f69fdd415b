//! TCP states as the kernel numbers them (`include/net/tcp_states.h`).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpState(pub u8);

const NAMES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

impl TcpState {
    /// The name without the kernel's `TCP_` prefix, as the output contract spells it.
    pub fn name(self) -> &'static str {
        NAMES.get(usize::from(self.0)).copied().unwrap_or("UNKNOWN")
    }

    pub fn from_name(name: &str) -> Option<Self> {
        NAMES.iter().skip(1).position(|n| *n == name).map(|i| Self(i as u8 + 1))
    }
}

impl std::fmt::Display for TcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::TcpState;
    use tracer_common::tcp_state;

    #[test]
    fn names_follow_the_kernel_numbering() {
        assert_eq!(TcpState(tcp_state::ESTABLISHED).name(), "ESTABLISHED");
        assert_eq!(TcpState(tcp_state::TIME_WAIT).name(), "TIME_WAIT");
        assert_eq!(TcpState(tcp_state::NEW_SYN_RECV).name(), "NEW_SYN_RECV");
        assert_eq!(TcpState(0).name(), "UNKNOWN");
        assert_eq!(TcpState(200).name(), "UNKNOWN");
        assert_eq!(TcpState::from_name("LAST_ACK"), Some(TcpState(tcp_state::LAST_ACK)));
        assert_eq!(TcpState::from_name("UNKNOWN"), None);
    }
}
