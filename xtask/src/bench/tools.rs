//! The tools under measurement: tracer in its modes and the libbpf-tools
//! peers, each started as a process with its output in a file.
use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{floor::Floor, stats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Untraced,
    /// Programs that return at once on tracer's hooks: the floor under its own.
    Floor,
    /// tracer on the storm's port, default mode, JSON.
    Tracer,
    /// tracer on another port: the storm is filtered out in the kernel.
    TracerOtherPort,
    TracerEvents,
    TracerDiagram,
    Tcplife,
    Tcpstates,
}

impl Tool {
    pub fn label(self) -> &'static str {
        match self {
            Tool::Untraced => "untraced",
            Tool::Floor => "empty programs",
            Tool::Tracer => "tracer (that port)",
            Tool::TracerOtherPort => "tracer (other port)",
            Tool::TracerEvents => "tracer --events",
            Tool::TracerDiagram => "tracer --diagram",
            Tool::Tcplife => "tcplife",
            Tool::Tcpstates => "tcpstates",
        }
    }
}

/// A running tool; stopped (SIGINT, then SIGKILL) on drop.
pub struct Running {
    pub tool: Tool,
    child: Option<Child>,
    _floor: Option<Floor>,
    /// The BPF programs and maps this tool loaded.
    pub progs: HashSet<u64>,
    pub maps: HashSet<u64>,
    pub out: PathBuf,
    pub err: PathBuf,
}

pub const TCPLIFE: &str = "/usr/sbin/tcplife";
pub const TCPSTATES: &str = "/usr/sbin/tcpstates";

impl Running {
    pub fn start(tool: Tool, tracer: &Path, port: u16, dir: &Path) -> Result<Running> {
        Self::start_with(tool, tracer, &[port], dir, &[])
    }

    /// `ports`: the traced ports (the first is the storm's); `extra`: more tracer arguments.
    pub fn start_with(tool: Tool, tracer: &Path, ports: &[u16], dir: &Path, extra: &[&str]) -> Result<Running> {
        let out = dir.join(format!("{tool:?}.out"));
        let err = dir.join(format!("{tool:?}.err"));
        let port_arg = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let other = (ports[0] ^ 1).to_string();
        let mut cmd = match tool {
            Tool::Untraced => return Ok(Running::without_process(tool, None, out, err, HashSet::new())),
            Tool::Floor => {
                let before = stats::ids("prog")?;
                let floor = Floor::attach()?;
                let progs = stats::ids("prog")?.difference(&before).copied().collect();
                return Ok(Running::without_process(tool, Some(floor), out, err, progs));
            }
            Tool::Tracer => tracer_cmd(tracer, &["--json", "--port", &port_arg]),
            Tool::TracerOtherPort => tracer_cmd(tracer, &["--json", "--port", &other]),
            Tool::TracerEvents => tracer_cmd(tracer, &["--json", "--events", "--port", &port_arg]),
            Tool::TracerDiagram => tracer_cmd(tracer, &["--diagram", "--port", &port_arg]),
            Tool::Tcplife => Command::new(TCPLIFE),
            Tool::Tcpstates => Command::new(TCPSTATES),
        };
        cmd.args(extra);
        let (progs_before, maps_before) = (stats::ids("prog")?, stats::ids("map")?);
        let child = cmd
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", tool.label()))?;
        let mut running = Running {
            tool,
            child: Some(child),
            _floor: None,
            out,
            err,
            progs: HashSet::new(),
            maps: HashSet::new(),
        };
        running.wait_ready(&progs_before)?;
        running.progs = stats::ids("prog")?.difference(&progs_before).copied().collect();
        running.maps = stats::ids("map")?.difference(&maps_before).copied().collect();
        Ok(running)
    }

    fn without_process(tool: Tool, floor: Option<Floor>, out: PathBuf, err: PathBuf, progs: HashSet<u64>) -> Self {
        Running {
            tool,
            child: None,
            _floor: floor,
            progs,
            maps: HashSet::new(),
            out,
            err,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// tracer says so on stderr; the peers (whose stdout a file buffers) are
    /// ready a moment after their programs are loaded.
    fn wait_ready(&self, progs_before: &HashSet<u64>) -> Result<()> {
        for _ in 0..200 {
            let ready = if self.is_tracer() {
                std::fs::read_to_string(&self.err)?.contains("tracing TCP connections")
            } else {
                stats::ids("prog")?.difference(progs_before).next().is_some()
            };
            if ready {
                thread::sleep(Duration::from_millis(if self.is_tracer() { 100 } else { 700 }));
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not start: {}",
            self.tool.label(),
            std::fs::read_to_string(&self.err)?
        )
    }

    fn is_tracer(&self) -> bool {
        !matches!(
            self.tool,
            Tool::Tcplife | Tool::Tcpstates | Tool::Untraced | Tool::Floor
        )
    }

    /// SIGINT and wait: tracer then prints its summary.
    pub fn stop_ref(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            for _ in 0..200 {
                if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
                {
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(20));
            }
            bail!("{} did not exit on SIGINT", self.tool.label());
        }
        Ok(())
    }

    /// tracer's JSON summary line.
    pub fn summary(&self) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out)?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with("{\"type\":\"summary\""))
            .context("no summary")?;
        Ok(serde_json::from_str(line)?)
    }

    /// Sockets this tool reported on `port`, and events it says it lost.
    pub fn reported(&self, port: u16) -> Result<(u64, u64)> {
        if matches!(self.tool, Tool::Untraced | Tool::Floor) {
            return Ok((0, 0));
        }
        let out = std::fs::File::open(&self.out)?;
        let lines = BufReader::new(out).lines().map_while(Result::ok);
        let p = port.to_string();
        let mut reported = 0;
        let mut dropped = 0;
        for line in lines {
            match self.tool {
                Tool::Tracer | Tool::TracerEvents => {
                    if line.starts_with("{\"type\":\"connection\"")
                        && (line.contains(&format!("\"lport\":{p},")) || line.contains(&format!("\"rport\":{p},")))
                    {
                        reported += 1;
                    } else if line.starts_with("{\"type\":\"summary\"") {
                        let v: serde_json::Value = serde_json::from_str(&line)?;
                        dropped = v["dropped"].as_u64().unwrap_or(0);
                    }
                }
                Tool::TracerDiagram => {
                    if line.starts_with("connection ") && line.contains(&format!(":{p}")) {
                        reported += 1;
                    } else if let Some(rest) = line.strip_prefix("# ") {
                        dropped = number_before(rest, " dropped").unwrap_or(0);
                    }
                }
                // Columns: ... LPORT ... RPORT ...; a socket is a line with the port.
                Tool::Tcplife => reported += u64::from(line.split_whitespace().any(|w| w == p)),
                // One line per transition; a socket's life ends with "-> CLOSE".
                Tool::Tcpstates => {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    reported += u64::from(w.contains(&p.as_str()) && w.iter().rev().nth(1) == Some(&"CLOSE"));
                }
                Tool::Untraced | Tool::Floor | Tool::TracerOtherPort => {}
            }
        }
        let err = std::fs::read_to_string(&self.err)?;
        for l in err.lines().filter(|l| l.contains("lost")) {
            dropped += l.split_whitespace().find_map(|w| w.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok((reported, dropped))
    }
}

/// The number just before `marker` in `text`: "3 dropped" -> 3.
fn number_before(text: &str, marker: &str) -> Option<u64> {
    let head = &text[..text.find(marker)?];
    head.rsplit([' ', ',']).next()?.parse().ok()
}

fn tracer_cmd(tracer: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(tracer);
    c.args(args);
    c
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
