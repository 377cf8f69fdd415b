//! Who owns a socket. A transition may fire in softirq, where the running task
//! is whoever the CPU interrupted, so ownership is only taken in process context:
//! `connect` (CLOSE -> SYN_SENT), `listen` (CLOSE -> LISTEN) and `accept` (fexit).
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use tracer_common::{Task, tcp_state};

use crate::maps::{LISTENERS, OWNERS};

#[inline(always)]
pub fn current_task() -> Task {
    Task {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// (owner, current) without an owner table: the owner is known only where the
/// transition runs in its process, and then it is the current task; elsewhere
/// only the current pid is read (its comm would cost a helper call for a task
/// that is usually not the owner).
#[inline(always)]
pub fn in_process_context(old: u8, new: u8) -> (Task, Task) {
    if old == tcp_state::CLOSE && (new == tcp_state::SYN_SENT || new == tcp_state::LISTEN) {
        let t = current_task();
        (t, t)
    } else {
        (
            Task::default(),
            Task {
                pid: (bpf_get_current_pid_tgid() >> 32) as u32,
                comm: [0; 16],
            },
        )
    }
}

/// The owner of `sock` as of this transition, remembering it when it is first
/// known. A socket's birth (connect, listen, or cloning from a listener)
/// always decides afresh: socket addresses are reused, and an entry left by
/// an earlier socket at the same address must not be inherited.
#[inline(always)]
pub fn resolve(sock: u64, old: u8, new: u8, sport: u16, current: &Task) -> Task {
    let born_here = old == tcp_state::CLOSE && (new == tcp_state::SYN_SENT || new == tcp_state::LISTEN);
    let cloned = old == tcp_state::LISTEN && new == tcp_state::SYN_RECV;
    if !born_here
        && !cloned
        && let Some(t) = OWNERS.get_ptr(sock)
    {
        // SAFETY: a map value pointer the verifier checked for null.
        return unsafe { *t };
    }
    let owner = if born_here {
        *current
    } else if let Some(t) = LISTENERS.get_ptr(sport) {
        // SAFETY: as above.
        unsafe { *t }
    } else {
        return Task::default();
    };
    let _ = OWNERS.insert(sock, owner, 0);
    if new == tcp_state::LISTEN {
        let _ = LISTENERS.insert(sport, owner, 0);
    }
    owner
}

/// Forget a socket that reached CLOSE: its address will be reused.
#[inline(always)]
pub fn forget(sock: u64, old: u8, sport: u16, owner: &Task) {
    let _ = OWNERS.remove(sock);
    if old == tcp_state::LISTEN
        && let Some(t) = LISTENERS.get_ptr(sport)
        // SAFETY: as above.
        && unsafe { (*t).pid } == owner.pid
    {
        let _ = LISTENERS.remove(sport);
    }
}

/// The accepting process owns the socket `accept` returns, whatever ran its
/// handshake: remembered for the owner filters, and shipped to userspace.
#[inline(always)]
pub fn claim(sock: u64) {
    let owner = current_task();
    if crate::maps::filters() & (tracer_common::filter::PIDS | tracer_common::filter::COMMS) != 0 {
        let _ = OWNERS.insert(sock, owner, 0);
    }
    let Some(mut entry) = crate::maps::EVENTS.reserve::<tracer_common::OwnerEvent>(0) else {
        crate::maps::count_drop();
        return;
    };
    entry.write(tracer_common::OwnerEvent {
        header: tracer_common::EventHeader {
            kind: tracer_common::kind::OWNER,
            flags: 0,
            // SAFETY: no preconditions.
            ts_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() },
        },
        sock,
        owner,
        _pad: [0; 4],
    });
    entry.submit(crate::maps::submit_flags());
}
