//! `cargo xtask bench`: tracer measured beside tcplife and tcpstates in the
//! same run, as ratios and per-connection costs that a noisy machine does
//! not fool. Prints a table, or JSON with `--json`.
mod bulk;
mod floor;
pub mod hold;
mod idle;
mod pipeline;
pub mod record;
mod report;
mod stats;
mod storm;
mod tools;

use std::{collections::HashMap, path::Path, thread, time::Duration};

use anyhow::{Context, Result};
use serde_json::json;

use stats::ProgRun;
use tools::{Running, Tool};

pub struct Options {
    pub json: bool,
    /// ABBA rounds of the storm comparison.
    pub rounds: usize,
    pub storm_secs: f64,
}

/// One storm under one tool.
#[derive(Clone, Debug)]
pub struct Sample {
    pub tool: Tool,
    /// The ABBA round it ran in; None for the detail modes, run on their own.
    pub round: Option<usize>,
    pub rate: f64,
    /// Sockets the storm made (two per connection, the final wake-up included).
    pub sockets: u64,
    pub reported: u64,
    pub dropped: u64,
    /// Microseconds of the tool's process CPU, and of its BPF programs, per connection.
    pub user_us: f64,
    pub bpf_us: f64,
    /// Microseconds the storm's threads waited for a CPU, per connection.
    pub wait_us: f64,
    pub progs: HashMap<String, ProgRun>,
}

fn delta(after: &HashMap<String, ProgRun>, before: &HashMap<String, ProgRun>) -> HashMap<String, ProgRun> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                ProgRun {
                    ns: a.ns - b.ns.min(a.ns),
                    runs: a.runs - b.runs.min(a.runs),
                },
            )
        })
        .collect()
}

fn measure(tool: Tool, tracer: &Path, dir: &Path, secs: f64) -> Result<Sample> {
    let port = storm::free_port()?;
    let running = Running::start(tool, tracer, port, dir)?;
    let pid = running.pid();
    let cpu0 = pid.map(stats::cpu_secs).transpose()?.unwrap_or(0.0);
    let progs0 = stats::programs(&running.progs)?;
    let storm = storm::run(port, Duration::from_secs_f64(secs))?;
    // What the storm caused is the tool's to finish: its reader wakes on a tick.
    thread::sleep(Duration::from_millis(300));
    let cpu1 = pid.map(stats::cpu_secs).transpose()?.unwrap_or(0.0);
    let progs = delta(&stats::programs(&running.progs)?, &progs0);
    running.stop_ref()?;
    let (reported, dropped) = running.reported(port)?;
    let conns = storm.connections.max(1) as f64;
    let bpf_ns: u64 = progs.values().map(|p| p.ns).sum();
    Ok(Sample {
        tool,
        round: None,
        rate: storm.rate(),
        sockets: 2 * (storm.connections + 1),
        reported,
        dropped,
        user_us: (cpu1 - cpu0) * 1e6 / conns,
        bpf_us: bpf_ns as f64 / 1e3 / conns,
        wait_us: storm.wait_ns as f64 / 1e3 / conns,
        progs,
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// tcplife and tcpstates attach classic tracepoints, which need tracefs; a
/// fresh machine has it unmounted (tracer itself does not need it).
fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    let st = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .context("run mount")?;
    anyhow::ensure!(st.success(), "cannot mount tracefs for tcplife and tcpstates");
    Ok(())
}

pub fn run(opts: &Options, tracer: &Path) -> Result<()> {
    ensure_tracefs()?;
    let dir = tempdir()?;
    let _stats = stats::BpfStats::enable()?;
    let compared = [
        Tool::Untraced,
        Tool::Floor,
        Tool::Tracer,
        Tool::TracerOtherPort,
        Tool::Tcplife,
        Tool::Tcpstates,
    ];
    let mut samples: Vec<Sample> = Vec::new();
    for round in 0..opts.rounds {
        // ABBA: forwards then backwards, so drift on the machine cancels out.
        let order: Vec<Tool> = compared.iter().chain(compared.iter().rev()).copied().collect();
        for tool in order {
            eprintln!("bench: round {} of {}, {}", round + 1, opts.rounds, tool.label());
            samples.push(Sample {
                round: Some(round),
                ..measure(tool, tracer, &dir, opts.storm_secs)?
            });
        }
    }
    for tool in [Tool::TracerEvents, Tool::TracerDiagram] {
        for _ in 0..opts.rounds {
            eprintln!("bench: detail mode {}", tool.label());
            samples.push(measure(tool, tracer, &dir, opts.storm_secs)?);
        }
    }
    eprintln!("bench: bulk transfers");
    let bulk = bulk_runs(tracer, &dir, opts.rounds)?;
    eprintln!("bench: {} connections held open", hold::PER_PROCESS * HOLDERS);
    let memory = hold_memory(tracer, &dir)?;
    eprintln!("bench: each tool idle");
    let idle = idle::measure(tracer, &dir)?;
    eprintln!("bench: userspace pipeline (cargo bench)");
    let mut r = report::Report::new(&samples, bulk, memory);
    r.idle = idle;
    r.replays = pipeline::run(&crate::build::workspace_root())?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&r.json())?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub struct Bulk {
    pub ratio: f64,
    /// Empty programs on tracer's hooks / untraced: what the hooks alone cost.
    pub floor_ratio: f64,
    pub untraced_gbps: f64,
    pub traced_gbps: f64,
    pub ring_bytes: u64,
    pub bytes: u64,
    /// The classifier's runs during the traced transfers: almost every
    /// segment of a bulk transfer is only counted.
    pub tc: ProgRun,
    /// The empty classifier's runs during the transfers it watched.
    pub floor_tc: ProgRun,
}

const BULK_BYTES: usize = 1 << 30;

fn bulk_runs(tracer: &Path, dir: &Path, rounds: usize) -> Result<Bulk> {
    let (mut untraced, mut floor, mut traced, mut ring) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let (mut tc, mut floor_tc) = (ProgRun::default(), ProgRun::default());
    for _ in 0..rounds {
        let order = [Tool::Untraced, Tool::Floor, Tool::Tracer];
        for tool in order.iter().chain(order.iter().rev()).copied() {
            let port = storm::free_port()?;
            let running = Running::start(tool, tracer, port, dir)?;
            let progs0 = stats::programs(&running.progs)?;
            let secs = bulk::transfer(port, BULK_BYTES)?;
            thread::sleep(Duration::from_millis(200));
            let progs = delta(&stats::programs(&running.progs)?, &progs0);
            running.stop_ref()?;
            let gbps = BULK_BYTES as f64 * 8.0 / secs / 1e9;
            match tool {
                Tool::Untraced => untraced.push(gbps),
                Tool::Floor => {
                    floor_tc.add(progs.get(floor::FLOOR_TC).copied().unwrap_or_default());
                    floor.push(gbps);
                }
                _ => {
                    for name in ["tc_egress", "tc_ingress"] {
                        tc.add(progs.get(name).copied().unwrap_or_default());
                    }
                    traced.push(gbps);
                    ring = ring.max(running.summary()?["ring_bytes"].as_u64().unwrap_or(0));
                }
            }
        }
    }
    let (u, t) = (median(untraced), median(traced));
    Ok(Bulk {
        ratio: t / u,
        floor_ratio: median(floor) / u,
        untraced_gbps: u,
        traced_gbps: t,
        ring_bytes: ring,
        bytes: BULK_BYTES as u64,
        tc,
        floor_tc,
    })
}

pub struct Memory {
    pub connections: u64,
    pub rss_bytes: u64,
    pub map_bytes: u64,
}

const HOLDERS: usize = 12;

fn hold_memory(tracer: &Path, dir: &Path) -> Result<Memory> {
    let ports: Vec<u16> = (0..HOLDERS).map(|_| storm::free_port()).collect::<Result<_>>()?;
    let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let maps_before = stats::ids("map")?;
    let mut child = std::process::Command::new(tracer)
        .args([
            "--json",
            "--port",
            &list,
            "--max-sockets",
            "300000",
            "--max-flows",
            "262144",
        ])
        .stdout(std::fs::File::create(dir.join("hold.out"))?)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start tracer")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stderr.as_mut().unwrap()), &mut line)?;
    let pid = child.id();
    let maps: std::collections::HashSet<u64> = stats::ids("map")?.difference(&maps_before).copied().collect();
    let holders = hold::Holders::start(&ports)?;
    thread::sleep(Duration::from_millis(500));
    let memory = Memory {
        connections: (hold::PER_PROCESS * HOLDERS) as u64,
        rss_bytes: stats::rss_bytes(pid)?,
        map_bytes: stats::map_bytes(&maps)?,
    };
    drop(holders);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait()?;
    Ok(memory)
}

/// For the report: the `--json` summary is machine-readable.
pub fn json_number(v: f64) -> serde_json::Value {
    json!((v * 1000.0).round() / 1000.0)
}
