//! What the eBPF build needs and a fresh machine lacks, installed on first use.
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::status;

pub const BPF_LINKER_VERSION: &str = "0.10.0";
/// bpf-linker 0.10.0's lockfile pins llvm-sys 221, i.e. LLVM 22; `--locked` keeps it so.
pub const BPF_LINKER_LLVM_MAJOR: u32 = 22;

pub fn ensure_ebpf_toolchain() -> Result<()> {
    ensure_nightly_component("rust-src")?;
    ensure_bpf_linker()?;
    check_llvm_match()
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A rustup component of nightly: `rust-src` for the kernel build, `clippy`
/// for its lint.
pub fn ensure_nightly_component(name: &str) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if installed.lines().any(|l| l.starts_with(name)) {
        return Ok(());
    }
    println!("xtask: installing {name} for nightly (rustup component add {name} --toolchain nightly)");
    status(Command::new("rustup").args(["component", "add", name, "--toolchain", "nightly"]))
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    println!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} (cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked)"
    );
    status(Command::new(env!("CARGO")).args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"]))
}

/// bpf-linker loads nightly's own libLLVM through llvm-sys; a different major
/// version cannot read the bitcode nightly emits and fails with an obscure error.
fn check_llvm_match() -> Result<()> {
    let rustc = output(Command::new("rustup").args(["run", "nightly", "rustc", "--version", "--verbose"]))?;
    let nightly =
        llvm_major(&rustc, "LLVM version:").context("cannot read nightly's LLVM version from `rustc +nightly -vV`")?;
    if nightly != BPF_LINKER_LLVM_MAJOR {
        bail!(
            "nightly rustc uses LLVM {nightly} but bpf-linker {BPF_LINKER_VERSION} is built for LLVM \
             {BPF_LINKER_LLVM_MAJOR}: install a nightly with LLVM {BPF_LINKER_LLVM_MAJOR} \
             (`rustup run nightly rustc -vV` shows its LLVM)"
        );
    }
    Ok(())
}

/// The major version after `marker` in `text`, e.g. "LLVM version: 22.1.4" -> 22.
pub fn llvm_major(text: &str, marker: &str) -> Option<u32> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest
        .trim_start_matches([' ', ':'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Programs the end-to-end tests drive, and the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("setpriv", "util-linux"),
    ("tshark", "tshark"),
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The peers the benchmark measures against, and what reads BPF statistics.
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("tcplife", "libbpf-tools"),
    ("tcpstates", "libbpf-tools"),
    ("bpftool", "bpftool"),
];

/// Installs the test tools a fresh machine lacks, with apt, and cargo-fuzz.
pub fn ensure_test_tools() -> Result<()> {
    apt_install("the tests", TEST_TOOLS)?;
    ensure_cargo_fuzz()
}

const CARGO_FUZZ_VERSION: &str = "0.13.1";

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz (cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked)");
    status(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"]))
}

pub fn ensure_bench_tools() -> Result<()> {
    apt_install("the benchmark", BENCH_TOOLS)
}

fn apt_install(who: &str, tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| !on_path(bin) && !std::path::Path::new("/usr/sbin").join(bin).is_file())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: installing what {who} needs (apt-get install {})",
        missing.join(" ")
    );
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(&missing),
    )
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn reads_llvm_major_from_rustc_and_linker() {
        assert_eq!(
            llvm_major("release: 1.97.0\nLLVM version: 22.1.4\n", "LLVM version:"),
            Some(22)
        );
        assert_eq!(llvm_major("LLVM version: 21\n", "LLVM version:"), Some(21));
        assert_eq!(llvm_major("release: 1.97.0\n", "LLVM version:"), None);
    }
}
