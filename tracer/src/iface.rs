//! Network interfaces to attach the classifier to.
use std::fs;

/// An interface the classifier can parse: its frames start with an Ethernet
/// header (Ethernet devices, and loopback, which uses a zeroed one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub loopback: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IfaceError {
    #[error("unknown interface {0}")]
    Unknown(String),
    #[error("interface {0} has no Ethernet framing (ARPHRD {1}): tracer cannot parse its packets")]
    Unframed(String, u32),
}

const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
const IFF_UP: u32 = 0x1;

fn sysfs_u32(name: &str, file: &str) -> Option<u32> {
    let raw = fs::read_to_string(format!("/sys/class/net/{name}/{file}")).ok()?;
    let raw = raw.trim();
    match raw.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => raw.parse().ok(),
    }
}

/// The named interface, if it exists and carries Ethernet frames.
pub fn by_name(name: &str) -> Result<Iface, IfaceError> {
    let index = sysfs_u32(name, "ifindex").ok_or_else(|| IfaceError::Unknown(name.into()))?;
    match sysfs_u32(name, "type") {
        Some(ARPHRD_ETHER) => Ok(Iface {
            name: name.into(),
            index,
            loopback: false,
        }),
        Some(ARPHRD_LOOPBACK) => Ok(Iface {
            name: name.into(),
            index,
            loopback: true,
        }),
        other => Err(IfaceError::Unframed(name.into(), other.unwrap_or(0))),
    }
}

/// A device whose packets also cross another traced device: a bridge port or
/// bond slave (it has a master) or a VLAN device (its parent sees the tagged
/// frame). Counting both would count each segment twice.
fn stacked(name: &str) -> bool {
    let dir = format!("/sys/class/net/{name}");
    std::path::Path::new(&format!("{dir}/master")).exists()
        || fs::read_to_string(format!("{dir}/uevent")).is_ok_and(|u| u.lines().any(|l| l == "DEVTYPE=vlan"))
}

/// Every interface that is up, stacked devices left to the device below or
/// above them; ones the classifier cannot parse are skipped with a warning.
pub fn all_up() -> Vec<Iface> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| sysfs_u32(n, "flags").is_some_and(|f| f & IFF_UP != 0))
        .filter(|n| !stacked(n))
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| by_name(n).map_err(|e| log::warn!("{e}: not traced")).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_framed() {
        let lo = by_name("lo").unwrap();
        assert!(lo.loopback);
        assert_eq!(lo.index, 1);
        assert!(all_up().iter().any(|i| i.name == "lo"));
    }

    #[test]
    fn an_unknown_name_is_an_error() {
        assert_eq!(by_name("nosuch0"), Err(IfaceError::Unknown("nosuch0".into())));
    }
}
