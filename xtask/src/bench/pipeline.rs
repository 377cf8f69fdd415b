//! The userspace pipeline's figures, from `cargo bench` (criterion), which
//! replays the recorded stream through decode, correlation and JSON output.
use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use super::report::{Allocations, Pipeline};
use crate::status;

const STAGES: [&str; 3] = ["decode", "decode_correlate", "end_to_end"];

/// Records in the recorded stream: each is a u32 length and that many bytes.
fn records(stream: &Path) -> Result<u64> {
    let raw = std::fs::read(stream).with_context(|| format!("read {}", stream.display()))?;
    let (mut at, mut n) = (0usize, 0u64);
    while at + 4 <= raw.len() {
        at += 4 + u32::from_le_bytes(raw[at..at + 4].try_into()?) as usize;
        n += 1;
    }
    Ok(n)
}

/// Where `cargo bench` writes the replay's allocation count.
pub fn allocations_path(root: &Path) -> std::path::PathBuf {
    root.join("target/criterion/pipeline/allocations.json")
}

/// What the bench counted in end-to-end replays.
pub fn allocations(root: &Path) -> Result<Allocations> {
    let path = allocations_path(root);
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

pub fn run(root: &Path) -> Result<Vec<Pipeline>> {
    status(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["bench", "-p", "tracer", "--bench", "pipeline"]),
    )?;
    let n = records(&root.join("tracer/benches/data/stream.bin"))? as f64;
    STAGES
        .iter()
        .map(|stage| {
            let path = root.join(format!("target/criterion/pipeline/{stage}/new/estimates.json"));
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
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
