//! `cargo xtask`: build the kernel programs and the tracer, run it, test it.
mod bench;
mod build;
mod setup;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test tracer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (installs what the nightly build lacks).
    BuildEbpf,
    /// Build the eBPF object and the release tracer binary.
    Build,
    /// Build, then run the tracer (as root, through sudo when needed) with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure tracer beside tcplife and tcpstates (as root): storm, CPU, memory, bulk.
    Bench {
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// ABBA rounds of each comparison.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of each connection storm.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Record the event streams that `cargo bench` replays (tracer/benches/data/stream.bin in the default mode, stream-events.bin with --events).
    Record,
    /// (used by bench) hold N connections to PORT open until stdin closes.
    #[command(hide = true)]
    Hold { port: u16, n: usize },
    /// Build, then run lint checks and the whole test suite (as root).
    Test {
        /// Extra arguments passed to `cargo test` after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::BuildEbpf => build::ebpf(),
        Task::Build => build::all(),
        Task::Run { args } => {
            build::all()?;
            let bin = build::workspace_root().join("target/release/tracer");
            status(as_root(bin.as_os_str()).args(&args))
        }
        Task::Bench { json, rounds, secs } => {
            build::all()?;
            setup::ensure_bench_tools()?;
            let tracer = build::workspace_root().join("target/release/tracer");
            bench::run(
                &bench::Options {
                    json,
                    rounds,
                    storm_secs: secs,
                },
                &tracer,
            )
        }
        Task::Hold { port, n } => bench::hold::serve(port, n),
        Task::Record => {
            build::all()?;
            build::peers()?;
            let root = build::workspace_root();
            let data = root.join("tracer/benches/data");
            std::fs::create_dir_all(&data)?;
            bench::record::run(&root.join("target/release/tracer"), &data)
        }
        Task::Test { args } => {
            build::all()?;
            setup::ensure_test_tools()?;
            test(&args)
        }
    }
}

fn test(args: &[String]) -> Result<()> {
    let root = build::workspace_root();
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(&root);
        c
    };
    status(cargo().args(["fmt", "--all", "--check"]))?;
    status(cargo().args(["fmt", "--check", "--manifest-path", "tracer-ebpf/Cargo.toml"]))?;
    status(cargo().args(["clippy", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    build::ebpf_clippy()?;
    build::peers()?;
    // The end-to-end tests load BPF programs: they run as root, one at a time,
    // because each tracer they start sees every socket on the host.
    let mut test = as_root(std::ffi::OsStr::new(env!("CARGO")));
    test.current_dir(&root)
        .args(["test", "--release", "--workspace", "--"])
        .args(args);
    if !args.iter().any(|a| a.starts_with("--test-threads")) {
        test.arg("--test-threads=1");
    }
    status(&mut test)?;
    fuzz(&root)
}

/// Each fuzz target, from its checked-in corpus, for a bounded number of runs.
const FUZZ_TARGETS: &[&str] = &["http1", "websocket", "http2", "tls", "reassembly"];
const FUZZ_RUNS: &str = "-runs=50000";

fn fuzz(root: &std::path::Path) -> Result<()> {
    for target in FUZZ_TARGETS {
        // New inputs go to a scratch directory: the checked-in corpus stays as it is.
        let scratch = std::env::temp_dir().join(format!("tracer-fuzz-{target}"));
        std::fs::create_dir_all(&scratch)?;
        let corpus = root.join("fuzz/corpus").join(target);
        // rustup's `cargo` proxy, not `$CARGO`: only the proxy takes `+nightly`,
        // and the sanitizers need nightly.
        status(
            Command::new("cargo")
                .current_dir(root)
                .args(["+nightly", "fuzz", "run", target])
                .arg(&scratch)
                .arg(&corpus)
                .args(["--", FUZZ_RUNS, "-max_len=4096"]),
        )?;
    }
    Ok(())
}

/// `cmd`, through `sudo -E` unless we are root already.
fn as_root(program: &std::ffi::OsStr) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(program);
        c
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}
