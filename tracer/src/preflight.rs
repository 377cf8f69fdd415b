//! What must hold before anything is loaded: privileges, BTF, tracefs and the
//! tracepoint's record layout. Each failure is one line that says what to do.
use std::{fs, path::Path};

use tracer_common::{retransmit_format as r, set_state_format as f};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("tracer needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (missing: {0})")]
    Privileges(String),
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("tracefs is not mounted and mounting it failed ({0}): run `mount -t tracefs nodev /sys/kernel/tracing`")]
    Tracefs(std::io::Error),
    #[error("cannot read the format of tracepoint {0} ({1}): this kernel may lack it")]
    Format(&'static str, std::io::Error),
    #[error("tracepoint {event} has an unexpected layout on this kernel: field {field} {found}")]
    Layout {
        event: &'static str,
        field: &'static str,
        found: String,
    },
}

const TRACEFS: &str = "/sys/kernel/tracing";

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn check_all() -> Result<(), PreflightError> {
    check_privileges()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::NoBtf);
    }
    ensure_tracefs()?;
    for (event, fields) in [
        ("sock/inet_sock_set_state", SET_STATE),
        ("tcp/tcp_retransmit_skb", RETRANSMIT),
    ] {
        let format = fs::read_to_string(format!("{TRACEFS}/events/{event}/format"))
            .map_err(|e| PreflightError::Format(event, e))?;
        check_layout(event, &format, fields)?;
    }
    Ok(())
}

fn check_privileges() -> Result<(), PreflightError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = missing_caps(&status);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Privileges(missing.join(", ")))
    }
}

/// Capabilities the tracer needs that `CapEff` in /proc/self/status lacks.
fn missing_caps(status: &str) -> Vec<&'static str> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect()
}

/// A fresh host may have tracefs unmounted; the classic tracepoint needs it.
fn ensure_tracefs() -> Result<(), PreflightError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    log::info!("mounting tracefs at {TRACEFS}");
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, dst, ty) = (c("nodev"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(PreflightError::Tracefs(std::io::Error::last_os_error()));
    }
    Ok(())
}

const SET_STATE: &[(&str, usize)] = &[
    ("skaddr", f::SKADDR),
    ("oldstate", f::OLDSTATE),
    ("newstate", f::NEWSTATE),
    ("sport", f::SPORT),
    ("dport", f::DPORT),
    ("family", f::FAMILY),
    ("protocol", f::PROTOCOL),
    ("saddr", f::SADDR),
    ("daddr", f::DADDR),
    ("saddr_v6", f::SADDR_V6),
    ("daddr_v6", f::DADDR_V6),
];

const RETRANSMIT: &[(&str, usize)] = &[
    ("sport", r::SPORT),
    ("dport", r::DPORT),
    ("family", r::FAMILY),
    ("saddr", r::SADDR),
    ("daddr", r::DADDR),
    ("saddr_v6", r::SADDR_V6),
    ("daddr_v6", r::DADDR_V6),
];

/// The kernel programs read records at fixed offsets; refuse to load on a
/// kernel whose records differ rather than report garbage.
fn check_layout(
    event: &'static str,
    format: &str,
    expected: &'static [(&'static str, usize)],
) -> Result<(), PreflightError> {
    for &(field, offset) in expected {
        let found = match field_offset(format, field) {
            Some(found) if found == offset => continue,
            Some(found) => format!("is at offset {found}, expected {offset}"),
            None => "is missing".into(),
        };
        return Err(PreflightError::Layout { event, field, found });
    }
    Ok(())
}

/// The offset of `name` in a tracefs format file, from a line such as
/// `field:__u16 sport; offset:24; size:2; signed:0;`.
fn field_offset(format: &str, name: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let ident = decl.rsplit([' ', '*']).next()?;
        let ident = ident.split('[').next()?;
        if ident != name {
            return None;
        }
        line.split(';')
            .find_map(|p| p.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: inet_sock_set_state
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn accepts_the_known_layout_and_rejects_a_moved_field() {
        let check = |format: &str| check_layout("sock/inet_sock_set_state", format, SET_STATE);
        assert!(check(FORMAT).is_ok());
        let moved = FORMAT.replace("sport;\toffset:24", "sport;\toffset:28");
        let err = check(&moved).unwrap_err().to_string();
        assert!(err.contains("field sport is at offset 28, expected 24"), "{err}");
        let missing = FORMAT.replace("saddr_v6", "src6");
        assert!(check(&missing).unwrap_err().to_string().contains("saddr_v6 is missing"));
    }

    #[test]
    fn names_each_missing_capability() {
        assert!(missing_caps("CapEff:\t000001ffffffffff\n").is_empty());
        assert_eq!(
            missing_caps("CapEff:\t0000000000000000\n"),
            ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert_eq!(missing_caps("CapEff:\t000000c000000000\n"), ["CAP_NET_ADMIN"]);
    }
}
