//! What must hold before anything is loaded: privileges and BTF. Each
//! failure is one line that says what to do.
use std::{fs, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("tracer needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (missing: {0})")]
    Privileges(String),
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn check_all() -> Result<(), PreflightError> {
    check_privileges()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::NoBtf);
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

#[cfg(test)]
mod tests {
    use super::*;

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
