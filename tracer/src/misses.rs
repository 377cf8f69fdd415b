//! Program runs the kernel skipped. A tracing program does not run on a CPU
//! where it is already running: a transition in softirq that interrupts the
//! state program's run in process context finds it busy. The kernel counts
//! each skipped run in the program's `recursion_misses`.
use std::os::fd::{AsFd, AsRawFd};

use aya::{Ebpf, maps::PerCpuArray};

/// `bpf(2)` command that fills a `bpf_prog_info`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Runs of program `name` the kernel skipped; 0 if it cannot tell.
pub fn recursion_misses(ebpf: &Ebpf, name: &str) -> u64 {
    let Some(fd) = ebpf.program(name).and_then(|p| p.fd().ok()) else {
        return 0;
    };
    // SAFETY: plain old data; the kernel fills what it knows.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: a valid attr for this command, pointing to a buffer of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        log::debug!("cannot read {name}'s run counters: {}", std::io::Error::last_os_error());
        return 0;
    }
    info.recursion_misses
}

/// Sum of a per-CPU counter map's slot 0.
pub fn per_cpu_total(map: &PerCpuArray<aya::maps::MapData, u64>) -> u64 {
    map.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
}
