//! What /proc knows that the kernel programs cannot see: processes that exist,
//! and who owns the sockets that were listening before the tracer started.
use std::{collections::HashMap, fs, path::Path};

pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).is_dir()
}

/// A listening TCP port and the process that holds its socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub pid: u32,
    pub comm: String,
}

impl Listener {
    /// The listener's process as the kernel would name it (comm: 15 bytes).
    pub fn process(&self) -> crate::event::Process {
        crate::event::Process::new(self.pid, crate::event::comm_bytes(&self.comm))
    }
}

/// Every listening TCP socket (IPv4 and IPv6) with the process that holds it.
pub fn listeners() -> Vec<Listener> {
    let mut by_inode = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        by_inode.extend(listening_inodes(&fs::read_to_string(table).unwrap_or_default()));
    }
    if by_inode.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (pid, inode) in socket_inodes() {
        if let Some(port) = by_inode.remove(&inode) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            found.push(Listener {
                port,
                pid,
                comm: comm.trim_end().to_string(),
            });
        }
    }
    found
}

/// inode -> local port of each LISTEN row of a /proc/net/tcp{,6} table.
fn listening_inodes(table: &str) -> HashMap<u64, u16> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            Some((inode.parse().ok()?, port))
        })
        .collect()
}

/// (pid, socket inode) for every socket fd of every process we can read.
fn socket_inodes() -> impl Iterator<Item = (u32, u64)> {
    let procs = fs::read_dir("/proc").into_iter().flatten().flatten();
    procs
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(|pid| {
            let fds = fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
            fds.filter_map(move |fd| {
                let link = fs::read_link(fd.path()).ok()?;
                let inode = link
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                Some((pid, inode))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_rows_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        let found = listening_inodes(table);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&4242], 8080);
    }

    #[test]
    fn this_process_exists_and_pid_zero_does_not_as_a_directory() {
        assert!(pid_exists(std::process::id()));
        assert!(!pid_exists(u32::MAX));
    }
}
