//! The userspace pipeline's figures, from `cargo bench` (criterion), which
//! replays each recorded stream through decode, correlation and JSON output.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{
    report::{Allocations, Pipeline, Replay},
    tools::Tool,
};
use crate::status;

/// A recorded stream: the tracer mode it was recorded in, its file under
/// `tracer/benches/data`, and criterion's group that replays it.
pub struct Stream {
    pub tool: Tool,
    pub mode: &'static str,
    pub file: &'static str,
    group: &'static str,
}

/// The default mode first: it is what the daemon runs unless asked for more.
/// The groups and files are those of `STREAMS` in `tracer/benches/pipeline.rs`.
pub const STREAMS: [Stream; 2] = [
    Stream {
        tool: Tool::Tracer,
        mode: "default",
        file: "stream.bin",
        group: "pipeline_default",
    },
    Stream {
        tool: Tool::TracerEvents,
        mode: "--events",
        file: "stream-events.bin",
        group: "pipeline_events",
    },
];

const STAGES: [&str; 3] = ["decode", "decode_correlate", "end_to_end"];

/// Records in a recorded stream: each is a u32 length and that many bytes.
fn records(stream: &Path) -> Result<u64> {
    let raw = std::fs::read(stream).with_context(|| format!("read {}", stream.display()))?;
    let (mut at, mut n) = (0usize, 0u64);
    while at + 4 <= raw.len() {
        at += 4 + u32::from_le_bytes(raw[at..at + 4].try_into()?) as usize;
        n += 1;
    }
    Ok(n)
}

/// Where `cargo bench` writes a stream's allocation count.
fn allocations_path(root: &Path, stream: &Stream) -> PathBuf {
    root.join(format!("target/criterion/{}/allocations.json", stream.group))
}

/// What the bench counted in a stream's end-to-end replays.
fn allocations(root: &Path, stream: &Stream) -> Result<Allocations> {
    let path = allocations_path(root, stream);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("read {}", path.display()))?)?;
    let field = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {}", path.display()));
    Ok(Allocations {
        allocations: field("allocations")?,
        first: field("first")?,
        replays: field("replays")?,
        events: field("events")?,
        connections: field("connections")?,
    })
}

/// Where criterion writes a stage's estimates.
fn estimates_path(root: &Path, stream: &Stream, stage: &str) -> PathBuf {
    root.join(format!("target/criterion/{}/{stage}/new/estimates.json", stream.group))
}

/// A stream's stages, in ns per event.
fn stages(root: &Path, stream: &Stream) -> Result<Vec<Pipeline>> {
    let n = records(&root.join("tracer/benches/data").join(stream.file))? as f64;
    STAGES
        .iter()
        .map(|stage| {
            let path = estimates_path(root, stream, stage);
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("read {}", path.display()))?)?;
            let ns = v["mean"]["point_estimate"]
                .as_f64()
                .context("no mean in criterion's estimates")?;
            Ok(Pipeline {
                stage: stage.to_string(),
                ns_per_event: ns / n,
            })
        })
        .collect()
}

pub fn run(root: &Path) -> Result<Vec<Replay>> {
    // Figures left by an earlier run must not pass for this one's.
    for stream in &STREAMS {
        let _ = std::fs::remove_file(allocations_path(root, stream));
        for stage in STAGES {
            let _ = std::fs::remove_file(estimates_path(root, stream, stage));
        }
    }
    status(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["bench", "-p", "tracer", "--bench", "pipeline"]),
    )?;
    STREAMS
        .iter()
        .map(|stream| {
            let allocations = allocations(root, stream)
                .inspect_err(|e| eprintln!("bench: no allocation count for the {} stream: {e:#}", stream.mode))
                .ok();
            Ok(Replay {
                mode: stream.mode,
                stages: stages(root, stream)?,
                allocations,
            })
        })
        .collect()
}
