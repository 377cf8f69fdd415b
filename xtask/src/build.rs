//! Building the kernel object and the userspace binary.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{setup, status};

/// Where `tracer/build.rs` expects the kernel object.
pub const EBPF_TARGET_DIR: &str = "target/ebpf";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn ebpf() -> Result<()> {
    status(&mut ebpf_cargo("build")?)
}

/// Lints the kernel crate, which the workspace's clippy does not reach.
pub fn ebpf_clippy() -> Result<()> {
    setup::ensure_nightly_component("clippy")?;
    status(ebpf_cargo("clippy")?.args(["--", "-D", "warnings"]))
}

/// Nightly cargo `subcommand` on the kernel crate, for the BPF target.
fn ebpf_cargo(subcommand: &str) -> Result<Command> {
    setup::ensure_ebpf_toolchain()?;
    let root = workspace_root();
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join("tracer-ebpf"))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "run",
            "nightly",
            "cargo",
            subcommand,
            "--locked",
            "-Z",
            "build-std=core",
        ])
        .args(["--target", "bpfel-unknown-none", "--release", "--target-dir"])
        .arg(root.join(EBPF_TARGET_DIR));
    Ok(cmd)
}

pub fn all() -> Result<()> {
    ebpf()?;
    status(Command::new(env!("CARGO")).current_dir(workspace_root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "tracer",
    ]))
}

/// The real protocol peers (HTTP/1, WebSocket, HTTP/2, TLS) that the tests
/// and the recorded stream use, built beside the tracer.
pub fn peers() -> Result<()> {
    status(Command::new(env!("CARGO")).current_dir(workspace_root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "peers",
    ]))
}
