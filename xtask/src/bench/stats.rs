//! CPU a tool spent: its process's user+sys time from /proc, and its BPF
//! programs' run time from the kernel's own statistics
//! (`kernel.bpf_stats_enabled=1`).
use std::{
    collections::{HashMap, HashSet},
    fs,
    process::Command,
};

use anyhow::{Context, Result};
use serde_json::Value;

/// Turns BPF run-time statistics on for as long as it lives.
pub struct BpfStats {
    before: String,
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let before = fs::read_to_string(SYSCTL).context("read kernel.bpf_stats_enabled")?;
        fs::write(SYSCTL, "1").context("enable kernel.bpf_stats_enabled")?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(SYSCTL, self.before.trim());
    }
}

/// user+sys seconds of a process, from /proc/PID/stat.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// Run time and run count of one program.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgRun {
    pub ns: u64,
    pub runs: u64,
}

impl ProgRun {
    pub fn add(&mut self, other: ProgRun) {
        self.ns += other.ns;
        self.runs += other.runs;
    }

    pub fn ns_per_run(&self) -> f64 {
        self.ns as f64 / self.runs.max(1) as f64
    }
}

fn bpftool_json(what: &str) -> Result<Vec<Value>> {
    let out = Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .context("run bpftool")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("parse bpftool's JSON")?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Ids of the programs (or maps: `what` = "map") loaded right now. Debian's
/// bpftool cannot name a program's process, so a tool's programs are the ones
/// that appeared after it started (the bench runs one tool at a time).
pub fn ids(what: &str) -> Result<HashSet<u64>> {
    Ok(bpftool_json(what)?.iter().filter_map(|p| p["id"].as_u64()).collect())
}

/// Run statistics of the given programs, by name (same-named ones summed).
pub fn programs(ids: &HashSet<u64>) -> Result<HashMap<String, ProgRun>> {
    let mut by_name: HashMap<String, ProgRun> = HashMap::new();
    for p in bpftool_json("prog")?
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id)))
    {
        by_name
            .entry(p["name"].as_str().unwrap_or("?").to_string())
            .or_default()
            .add(ProgRun {
                ns: p["run_time_ns"].as_u64().unwrap_or(0),
                runs: p["run_cnt"].as_u64().unwrap_or(0),
            });
    }
    Ok(by_name)
}

/// Resident memory of a process in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status_field(&status, "VmRSS:").context("no VmRSS")?;
    Ok(kib * 1024)
}

/// The number after `key` in a /proc `status` file (its unit, if any, left off).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Field `i` of a /proc `schedstat` file: 0 time on a CPU, 1 time waiting
/// on a run queue (both ns).
pub fn schedstat_field(schedstat: &str, i: usize) -> Option<u64> {
    schedstat.split_whitespace().nth(i)?.parse().ok()
}

/// Memory of the given maps, by the kernel's account (`bytes_memlock`).
pub fn map_bytes(ids: &HashSet<u64>) -> Result<u64> {
    Ok(bpftool_json("map")?
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
        .sum())
}

/// One number from each of a process's threads' files under /proc, summed.
fn threads_sum(pid: u32, file: &str, read: impl Fn(&str) -> Option<u64>) -> Result<u64> {
    let mut sum = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that exited since the listing counts for nothing.
        if let Ok(text) = fs::read_to_string(task?.path().join(file)) {
            sum += read(&text).with_context(|| format!("bad /proc/{pid}/task/*/{file}"))?;
        }
    }
    Ok(sum)
}

/// Nanoseconds all of a process's threads ran (schedstat: finer than the
/// clock ticks of /proc/PID/stat, which a quiet process hardly spends).
pub fn threads_cpu_ns(pid: u32) -> Result<u64> {
    threads_sum(pid, "schedstat", |s| schedstat_field(s, 0))
}

/// Times all of a process's threads went to sleep of their own accord.
pub fn threads_wakeups(pid: u32) -> Result<u64> {
    threads_sum(pid, "status", |s| status_field(s, "voluntary_ctxt_switches:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_and_schedstat_fields() {
        let status = "Name:\ttracer\nVmRSS:\t  139060 kB\nvoluntary_ctxt_switches:\t182\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(139_060));
        assert_eq!(status_field(status, "voluntary_ctxt_switches:"), Some(182));
        assert_eq!(status_field(status, "VmHWM:"), None);
        let schedstat = "824336252 3590444 201\n";
        assert_eq!(schedstat_field(schedstat, 0), Some(824_336_252));
        assert_eq!(schedstat_field(schedstat, 1), Some(3_590_444));
        assert_eq!(schedstat_field(schedstat, 3), None);
    }
}
