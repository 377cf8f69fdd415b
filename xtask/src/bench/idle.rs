//! What each tool costs while the bench makes no traffic (tracer traces a
//! port nothing uses; tcplife and tcpstates see every TCP socket): what an
//! operator pays for leaving it running on a quiet service. CPU time and
//! wake-ups (voluntary context switches) of all its threads, per second.
use std::{path::Path, thread, time::Duration};

use anyhow::{Context, Result};

use super::{
    stats, storm,
    tools::{Running, Tool},
};

pub struct Idle {
    pub tool: Tool,
    pub cpu_ms_per_s: f64,
    pub wakeups_per_s: f64,
}

const SECS: f64 = 5.0;

pub fn measure(tracer: &Path, dir: &Path) -> Result<Vec<Idle>> {
    [Tool::Tracer, Tool::Tcplife, Tool::Tcpstates]
        .into_iter()
        .map(|tool| one(tool, tracer, dir))
        .collect()
}

fn one(tool: Tool, tracer: &Path, dir: &Path) -> Result<Idle> {
    let running = Running::start(tool, tracer, storm::free_port()?, dir)?;
    let pid = running.pid().context("an idle tool without a process")?;
    // Past start-up, and long enough for tracer's tick to stretch.
    thread::sleep(Duration::from_secs(1));
    let (cpu0, woke0) = (stats::threads_cpu_ns(pid)?, stats::threads_wakeups(pid)?);
    thread::sleep(Duration::from_secs_f64(SECS));
    let (cpu1, woke1) = (stats::threads_cpu_ns(pid)?, stats::threads_wakeups(pid)?);
    running.stop_ref()?;
    Ok(Idle {
        tool,
        // A thread that exited between the two reads takes its share with it.
        cpu_ms_per_s: cpu1.saturating_sub(cpu0) as f64 / 1e6 / SECS,
        wakeups_per_s: woke1.saturating_sub(woke0) as f64 / SECS,
    })
}
