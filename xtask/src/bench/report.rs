//! The bench's table and JSON: every figure is a ratio or a per-unit cost
//! measured in the same run, with the targets beside them.
use std::fmt::Write;

use serde_json::{Value, json};

use super::{
    Bulk, Memory, Sample,
    floor::{FLOOR_STATE, FLOOR_TC},
    idle::Idle,
    json_number, median,
    stats::ProgRun,
    tools::Tool,
};

pub struct Pipeline {
    pub stage: String,
    pub ns_per_event: f64,
}

/// One recorded stream's replays: its stages and its allocations.
pub struct Replay {
    /// The tracer mode the stream was recorded in.
    pub mode: &'static str,
    pub stages: Vec<Pipeline>,
    pub allocations: Option<Allocations>,
}

impl Replay {
    fn events_per_sec(&self) -> Option<f64> {
        let p = self.stages.iter().find(|p| p.stage == "end_to_end")?;
        Some(1e9 / p.ns_per_event)
    }
}

/// Heap allocations (and reallocations) in end-to-end replays of the
/// recorded stream, from the bench's counting allocator.
pub struct Allocations {
    /// In the steady state: the last of `replays` through one pipeline,
    /// which allocated nothing, or no less than the one before it (or the tenth).
    pub allocations: u64,
    /// In a fresh pipeline's first replay, its tables and spares growing.
    pub first: u64,
    pub replays: u64,
    pub events: u64,
    pub connections: u64,
}

pub struct Report {
    rows: Vec<Row>,
    progs: Vec<(String, ProgRun, ProgRun)>,
    /// The empty programs' runs during their storms, by name.
    floor: std::collections::HashMap<String, ProgRun>,
    bulk: Bulk,
    memory: Memory,
    pub replays: Vec<Replay>,
    pub idle: Vec<Idle>,
}

struct Row {
    tool: Tool,
    rate: f64,
    ratio: f64,
    /// The lowest and highest of its ratios round by round, each against
    /// the same round's untraced storms: how far one round can be off.
    spread: Option<(f64, f64)>,
    user_us: f64,
    bpf_us: f64,
    /// The storm's threads' wait for a CPU, per connection.
    wait_us: f64,
    reported: u64,
    sockets: u64,
    dropped: u64,
}

impl Row {
    fn cpu_us(&self) -> f64 {
        self.user_us + self.bpf_us
    }
}

fn sum_progs<'a>(samples: impl Iterator<Item = &'a Sample>) -> std::collections::HashMap<String, ProgRun> {
    let mut all = std::collections::HashMap::<String, ProgRun>::new();
    for s in samples {
        for (name, p) in &s.progs {
            all.entry(name.clone()).or_default().add(*p);
        }
    }
    all
}

/// Each ABBA round's median rate of `tool` over the round's untraced
/// median: the (lowest, highest) of those ratios.
fn spread(samples: &[Sample], tool: Tool) -> Option<(f64, f64)> {
    let rounds = samples.iter().filter_map(|s| s.round).max()?;
    let rate = |t: Tool, r: usize| {
        let rates: Vec<f64> = samples
            .iter()
            .filter(|s| s.tool == t && s.round == Some(r))
            .map(|s| s.rate)
            .collect();
        (!rates.is_empty()).then(|| median(rates))
    };
    let ratios: Vec<f64> = (0..=rounds)
        .filter_map(|r| Some(rate(tool, r)? / rate(Tool::Untraced, r)?))
        .collect();
    let lowest = ratios.iter().copied().reduce(f64::min)?;
    Some((lowest, ratios.iter().copied().fold(lowest, f64::max)))
}

impl Report {
    pub fn new(samples: &[Sample], bulk: Bulk, memory: Memory) -> Self {
        let of = |t: Tool| samples.iter().filter(move |s| s.tool == t);
        let untraced = median(of(Tool::Untraced).map(|s| s.rate).collect());
        let tools = [
            Tool::Untraced,
            Tool::Floor,
            Tool::Tracer,
            Tool::TracerOtherPort,
            Tool::Tcplife,
            Tool::Tcpstates,
            Tool::TracerEvents,
            Tool::TracerDiagram,
        ];
        let rows = tools
            .iter()
            .filter(|&&t| of(t).next().is_some())
            .map(|&t| {
                let rate = median(of(t).map(|s| s.rate).collect());
                Row {
                    tool: t,
                    rate,
                    ratio: rate / untraced,
                    spread: spread(samples, t),
                    user_us: median(of(t).map(|s| s.user_us).collect()),
                    bpf_us: median(of(t).map(|s| s.bpf_us).collect()),
                    wait_us: median(of(t).map(|s| s.wait_us).collect()),
                    reported: of(t).map(|s| s.reported).sum(),
                    sockets: of(t).map(|s| s.sockets).sum(),
                    dropped: of(t).map(|s| s.dropped).sum(),
                }
            })
            .collect();
        let traced = sum_progs(of(Tool::Tracer));
        let untraced_progs = sum_progs(of(Tool::TracerOtherPort));
        let mut progs: Vec<(String, ProgRun, ProgRun)> = traced
            .iter()
            .map(|(n, p)| (n.clone(), *p, untraced_progs.get(n).copied().unwrap_or_default()))
            .collect();
        progs.sort_by(|a, b| a.0.cmp(&b.0));
        Report {
            rows,
            progs,
            floor: sum_progs(of(Tool::Floor)),
            bulk,
            memory,
            replays: Vec::new(),
            idle: Vec::new(),
        }
    }

    fn row(&self, t: Tool) -> Option<&Row> {
        self.rows.iter().find(|r| r.tool == t)
    }

    fn prog_ns(&self, name: &str, traced: bool) -> f64 {
        self.progs
            .iter()
            .find(|p| p.0 == name)
            .map(|p| if traced { p.1 } else { p.2 })
            .map_or(0.0, |p| p.ns_per_run())
    }

    /// " (rounds LO-HI)": how far a round's ratio strayed from the median.
    fn by_round(&self, t: Tool) -> String {
        self.row(t)
            .and_then(|r| r.spread)
            .map_or(String::new(), |(lo, hi)| format!(" (rounds {lo:.2}-{hi:.2})"))
    }

    /// An empty program's runs in the storms (none when it never ran).
    fn floor_run(&self, name: &str) -> ProgRun {
        self.floor.get(name).copied().unwrap_or_default()
    }

    /// An empty program's ns per run on the hook `name` stands for.
    fn floor_ns(&self, name: &str) -> f64 {
        self.floor.get(name).map_or(f64::NAN, ProgRun::ns_per_run)
    }

    /// (what, target, measured, met)
    fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut t = Vec::new();
        let ratio = |tool| self.row(tool).map_or(0.0, |r| r.ratio);
        let cpu = |tool| self.row(tool).map_or(f64::NAN, |r| r.cpu_us());
        let lif = cpu(Tool::Tcplife);
        t.push((
            "storm rate, tracer on that port / untraced".into(),
            ">= 0.95".into(),
            format!("{:.3}{}", ratio(Tool::Tracer), self.by_round(Tool::Tracer)),
            ratio(Tool::Tracer) >= 0.95,
        ));
        let other = ratio(Tool::TracerOtherPort);
        t.push((
            "storm rate, tracer on another port / untraced".into(),
            ">= 0.99".into(),
            format!(
                "{other:.3}{} (empty programs {:.3})",
                self.by_round(Tool::TracerOtherPort),
                ratio(Tool::Floor)
            ),
            other >= 0.99,
        ));
        let d = cpu(Tool::Tracer);
        t.push((
            "CPU per connection, default mode".into(),
            format!("<= 0.5 x tcplife ({:.1} us)", 0.5 * lif),
            format!("{d:.1} us ({:.2} x)", d / lif),
            d <= 0.5 * lif,
        ));
        let e = cpu(Tool::TracerEvents);
        t.push((
            "CPU per connection, --events".into(),
            format!("<= tcplife ({lif:.1} us)"),
            format!("{e:.1} us ({:.2} x)", e / lif),
            e <= lif,
        ));
        let complete = [Tool::Tracer, Tool::TracerEvents, Tool::TracerDiagram]
            .iter()
            .filter_map(|&x| self.row(x))
            .all(|r| r.reported == r.sockets && r.dropped == 0);
        let detail: Vec<String> = [Tool::Tracer, Tool::TracerEvents, Tool::TracerDiagram]
            .iter()
            .filter_map(|&x| self.row(x))
            .map(|r| format!("{}/{} drops {}", r.reported, r.sockets, r.dropped))
            .collect();
        t.push((
            "sockets reported / made; drops (every mode)".into(),
            "100 %; 0".into(),
            detail.join(", "),
            complete,
        ));
        let tc_untraced = self.prog_ns("tc_egress", false);
        t.push((
            "TC program, untraced flow".into(),
            "<= 60 ns/run".into(),
            format!("{tc_untraced:.0} ns (empty program {:.0})", self.floor_ns(FLOOR_TC)),
            tc_untraced <= 60.0,
        ));
        let counting = self.bulk.tc.ns_per_run();
        let measured = self.bulk.tc.runs > 0;
        t.push((
            "TC program, traced flow, counting only (bulk)".into(),
            "<= 120 ns/run".into(),
            if measured {
                format!(
                    "{counting:.0} ns ({} runs; empty program {:.0})",
                    self.bulk.tc.runs,
                    self.bulk.floor_tc.ns_per_run()
                )
            } else {
                "not measured (no runs seen)".into()
            },
            measured && counting <= 120.0,
        ));
        // Both copies of the state program run for every transition.
        let state = |traced| self.prog_ns("inet_sock_set_s", traced) + self.prog_ns("set_state_neste", traced);
        let (st, su) = (state(true), state(false));
        t.push((
            "state program (both copies) traced / untraced".into(),
            "<= 250 / 80 ns/run".into(),
            format!(
                "{st:.0} / {su:.0} ns (empty program 2 x {:.0})",
                self.floor_ns(FLOOR_STATE)
            ),
            st <= 250.0 && su <= 80.0,
        ));
        for r in &self.replays {
            if let Some(eps) = r.events_per_sec() {
                t.push((
                    format!("userspace end to end, one core ({})", r.mode),
                    ">= 1,000,000 events/s".into(),
                    format!("{eps:.0} events/s"),
                    eps >= 1e6,
                ));
            }
            if let Some(a) = &r.allocations {
                t.push((
                    format!("userspace allocations per event ({})", r.mode),
                    "0 in steady state".into(),
                    format!(
                        "{:.3} per event ({} in replay {}; the first {:.2} per event)",
                        a.allocations as f64 / a.events.max(1) as f64,
                        a.allocations,
                        a.replays,
                        a.first as f64 / a.events.max(1) as f64
                    ),
                    a.allocations == 0,
                ));
            }
        }
        let mib = self.memory.rss_bytes as f64 / (1 << 20) as f64;
        t.push((
            format!("{} open connections, resident", self.memory.connections),
            "<= 150 MiB".into(),
            format!("{mib:.1} MiB"),
            mib <= 150.0,
        ));
        let share = self.bulk.ring_bytes as f64 / self.bulk.bytes as f64 * 100.0;
        t.push((
            "bulk 1 GiB, traced / untraced".into(),
            ">= 0.98".into(),
            format!("{:.3} (empty programs {:.3})", self.bulk.ratio, self.bulk.floor_ratio),
            self.bulk.ratio >= 0.98,
        ));
        t.push((
            "bulk ring-buffer bytes / bytes moved".into(),
            "<= 0.01 %".into(),
            format!("{share:.5} % ({} B)", self.bulk.ring_bytes),
            share <= 0.01,
        ));
        t
    }

    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "connection storm (medians of ABBA rounds; CPU = process user+sys + BPF run time, per connection;\n\
             wait = the storm's threads' time ready on a run queue, per connection)"
        );
        let _ = writeln!(
            o,
            "{:<22} {:>10} {:>7} {:>13} {:>9} {:>9} {:>9} {:>8} {:>17} {:>6}",
            "tool", "conn/s", "ratio", "by round", "user us", "bpf us", "cpu us", "wait us", "reported/made", "drops"
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "{:<22} {:>10.0} {:>7.3} {:>13} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>17} {:>6}",
                r.tool.label(),
                r.rate,
                r.ratio,
                r.spread.map_or("-".into(), |(lo, hi)| format!("{lo:.3}-{hi:.3}")),
                r.user_us,
                r.bpf_us,
                r.cpu_us(),
                r.wait_us,
                format!("{}/{}", r.reported, r.sockets),
                r.dropped
            );
        }
        let _ = writeln!(
            o,
            "\ntracer's programs (ns per run, runs): traced flows | untraced flows"
        );
        for (name, t, u) in &self.progs {
            let _ = writeln!(
                o,
                "{name:<18} {:>8.0} ns {:>10} | {:>8.0} ns {:>10}",
                t.ns_per_run(),
                t.runs,
                u.ns_per_run(),
                u.runs
            );
        }
        let _ = writeln!(
            o,
            "\nempty programs on the same hooks (the floor: the kernel's dispatch and bpf_stats' accounting)"
        );
        for name in [FLOOR_TC, FLOOR_STATE] {
            let p = self.floor_run(name);
            let _ = writeln!(o, "{name:<18} {:>8.0} ns {:>10}", p.ns_per_run(), p.runs);
        }
        if !self.idle.is_empty() {
            let _ = writeln!(
                o,
                "\nidle, the bench making no traffic (tracer on a port nothing uses; all threads)"
            );
            for i in &self.idle {
                let _ = writeln!(
                    o,
                    "{:<24} {:>8.2} ms CPU/s {:>8.1} wake-ups/s",
                    i.tool.label(),
                    i.cpu_ms_per_s,
                    i.wakeups_per_s
                );
            }
        }
        for r in &self.replays {
            let _ = writeln!(
                o,
                "\nuserspace pipeline, {} mode's stream (cargo bench, one core)",
                r.mode
            );
            for p in &r.stages {
                let _ = writeln!(
                    o,
                    "{:<18} {:>8.1} ns/event {:>12.0} events/s",
                    p.stage,
                    p.ns_per_event,
                    1e9 / p.ns_per_event
                );
            }
        }
        let _ = writeln!(
            o,
            "\nbulk 1 GiB: untraced {:.2} Gbit/s, traced {:.2} Gbit/s, ratio {:.3} (empty programs {:.3}), \
             ring-buffer bytes {}, TC {:.0} ns per run over {} runs",
            self.bulk.untraced_gbps,
            self.bulk.traced_gbps,
            self.bulk.ratio,
            self.bulk.floor_ratio,
            self.bulk.ring_bytes,
            self.bulk.tc.ns_per_run(),
            self.bulk.tc.runs
        );
        let _ = writeln!(
            o,
            "memory: {} connections open ({} sockets): tracer resident {:.1} MiB, kernel maps {:.1} MiB",
            self.memory.connections,
            2 * self.memory.connections,
            self.memory.rss_bytes as f64 / (1 << 20) as f64,
            self.memory.map_bytes as f64 / (1 << 20) as f64
        );
        let _ = writeln!(o, "\ntargets");
        for (what, target, got, met) in self.targets() {
            let _ = writeln!(
                o,
                "{:<48} {:<28} {:<34} {}",
                what,
                target,
                got,
                if met { "met" } else { "MISSED" }
            );
        }
        o
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({"tool": r.tool.label(), "conn_per_s": json_number(r.rate), "ratio": json_number(r.ratio),
                       "ratio_by_round": r.spread.map(|(lo, hi)| json!([json_number(lo), json_number(hi)])),
                       "user_us_per_conn": json_number(r.user_us), "bpf_us_per_conn": json_number(r.bpf_us),
                       "cpu_us_per_conn": json_number(r.cpu_us()), "storm_wait_us_per_conn": json_number(r.wait_us),
                       "reported": r.reported, "sockets": r.sockets,
                       "dropped": r.dropped})
            })
            .collect();
        let progs: Vec<Value> = self
            .progs
            .iter()
            .map(|(n, t, u)| json!({"program": n, "traced": {"ns": t.ns, "runs": t.runs}, "untraced": {"ns": u.ns, "runs": u.runs}}))
            .collect();
        let floor: Vec<Value> = [FLOOR_TC, FLOOR_STATE]
            .iter()
            .map(|&n| {
                let p = self.floor_run(n);
                json!({"program": n, "ns": p.ns, "runs": p.runs})
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(w, t, g, m)| json!({"what": w, "target": t, "measured": g, "met": m}))
            .collect();
        let pipeline: Vec<Value> = self
            .replays
            .iter()
            .map(|r| {
                let stages: Vec<Value> = r
                    .stages
                    .iter()
                    .map(|p| json!({"stage": p.stage, "ns_per_event": json_number(p.ns_per_event)}))
                    .collect();
                let allocations = r.allocations.as_ref().map(|a| {
                    json!({"allocations": a.allocations, "first": a.first, "replays": a.replays,
                           "events": a.events, "connections": a.connections})
                });
                json!({"mode": r.mode, "stages": stages, "allocations": allocations})
            })
            .collect();
        let idle: Vec<Value> = self
            .idle
            .iter()
            .map(|i| json!({"tool": i.tool.label(), "cpu_ms_per_s": json_number(i.cpu_ms_per_s), "wakeups_per_s": json_number(i.wakeups_per_s)}))
            .collect();
        json!({"storm": rows, "programs": progs, "floor": floor, "pipeline": pipeline, "idle": idle,
               "bulk": {"ratio": json_number(self.bulk.ratio), "floor_ratio": json_number(self.bulk.floor_ratio), "ring_bytes": self.bulk.ring_bytes, "bytes": self.bulk.bytes,
                        "tc": {"ns": self.bulk.tc.ns, "runs": self.bulk.tc.runs},
                        "floor_tc": {"ns": self.bulk.floor_tc.ns, "runs": self.bulk.floor_tc.runs}},
               "memory": {"connections": self.memory.connections, "rss_bytes": self.memory.rss_bytes, "map_bytes": self.memory.map_bytes},
               "targets": targets})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tool: Tool, round: Option<usize>, rate: f64) -> Sample {
        Sample {
            tool,
            round,
            rate,
            sockets: 0,
            reported: 0,
            dropped: 0,
            user_us: 0.0,
            bpf_us: 0.0,
            wait_us: 0.0,
            progs: Default::default(),
        }
    }

    #[test]
    fn each_round_is_read_against_its_own_untraced_storms() {
        let samples = [
            sample(Tool::Untraced, Some(0), 100.0),
            sample(Tool::Tracer, Some(0), 90.0),
            sample(Tool::Tracer, Some(0), 80.0),
            sample(Tool::Untraced, Some(0), 100.0),
            sample(Tool::Untraced, Some(1), 50.0),
            sample(Tool::Tracer, Some(1), 50.0),
            // A detail-mode storm belongs to no round.
            sample(Tool::Tracer, None, 1.0),
        ];
        // Round 0: the median of 80 and 90 (the upper one) over 100; round 1: 50 over 50.
        assert_eq!(spread(&samples, Tool::Tracer), Some((0.9, 1.0)));
        assert_eq!(spread(&samples, Tool::Tcplife), None);
        assert_eq!(spread(&samples[6..], Tool::Tracer), None);
    }
}
