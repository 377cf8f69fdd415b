//! The floor under tracer's programs: programs that return at once, on the
//! hooks tracer uses (TCX egress on `lo`, the `inet_sock_set_state`
//! tracepoint), loaded straight through `bpf(2)`. Their ns per run is what
//! the kernel's dispatch and bpf_stats' own accounting cost before any of
//! tracer's logic, and the storm's rate beside them what merely having
//! something attached there costs the storm.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, bail};

const BPF_PROG_LOAD: i64 = 5;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const BPF_LINK_CREATE: i64 = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_TCX_EGRESS: u32 = 47;
/// The empty programs' names, as bpftool shows them.
pub const FLOOR_TC: &str = "floor_tc";
pub const FLOOR_STATE: &str = "floor_state";
/// `bpf_attr` is a union of up to this many bytes for the commands used here.
const ATTR_LEN: usize = 128;

/// The empty programs, attached for as long as this lives; closing the
/// link and program descriptors detaches them.
pub struct Floor {
    _fds: Vec<OwnedFd>,
}

impl Floor {
    pub fn attach() -> Result<Self> {
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        anyhow::ensure!(lo != 0, "no loopback interface");
        // TC_ACT_UNSPEC (TCX_NEXT): the packet goes on as if nothing were there.
        let tc = load(BPF_PROG_TYPE_SCHED_CLS, -1, FLOOR_TC)?;
        let tc_link = link_tcx(&tc, lo)?;
        let state = load(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, FLOOR_STATE)?;
        let state_link = raw_tracepoint(&state, "inet_sock_set_state")?;
        Ok(Floor {
            _fds: vec![tc_link, tc, state_link, state],
        })
    }
}

fn bpf(cmd: i64, attr: &mut [u8; ATTR_LEN], what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zeroed bpf_attr of ATTR_LEN bytes that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as u32) };
    if fd < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8; ATTR_LEN], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `r0 = ret; exit`.
fn load(prog_type: u32, ret: i32, name: &str) -> Result<OwnedFd> {
    let mut insns = [0u8; 16];
    insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    insns[4..8].copy_from_slice(&ret.to_ne_bytes());
    insns[8] = 0x95; // BPF_JMP | BPF_EXIT
    let license = c"GPL";
    let mut attr = [0u8; ATTR_LEN];
    put(&mut attr, 0, &prog_type.to_ne_bytes());
    put(&mut attr, 4, &2u32.to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    let name = name.as_bytes();
    put(&mut attr, 48, &name[..name.len().min(15)]);
    bpf(BPF_PROG_LOAD, &mut attr, "load an empty program")
}

fn link_tcx(prog: &OwnedFd, ifindex: u32) -> Result<OwnedFd> {
    let mut attr = [0u8; ATTR_LEN];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    put(&mut attr, 8, &BPF_TCX_EGRESS.to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut attr, "attach an empty program to lo's TCX egress")
}

fn raw_tracepoint(prog: &OwnedFd, name: &str) -> Result<OwnedFd> {
    let name = CString::new(name).context("tracepoint name")?;
    let mut attr = [0u8; ATTR_LEN];
    put(&mut attr, 0, &(name.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, &(prog.as_raw_fd() as u32).to_ne_bytes());
    bpf(
        BPF_RAW_TRACEPOINT_OPEN,
        &mut attr,
        "attach an empty program to a tracepoint",
    )
}
