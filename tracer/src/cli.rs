//! Command-line interface.
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "The life of every TCP connection of a process or port, traced from inside the kernel",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a built-in loopback exchange and show what the kernel reported.
    Demo {
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Trace only connections with this port at either end (comma list, repeatable).
    #[arg(long, value_delimiter = ',', value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,
    /// Trace only sockets of this process id (comma list, repeatable).
    #[arg(short = 'p', long, value_delimiter = ',', value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Vec<u32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// The live stream of state transitions (the default for now).
    #[arg(long)]
    pub events: bool,
    /// Ring-buffer size in bytes: a power of two, at least one page.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = parse_ring_bytes)]
    pub ring_bytes: u32,
    /// Show more detail on errors (the verifier's last lines).
    #[arg(short, long)]
    pub verbose: bool,
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied()))
    }

    #[test]
    fn ports_and_pids_are_comma_lists_and_repeatable() {
        let cli = parse(&["--port", "80,443", "--port", "8080", "-p", "1,2", "--json"]).unwrap();
        assert_eq!(cli.trace.port, vec![80, 443, 8080]);
        assert_eq!(cli.trace.pid, vec![1, 2]);
        assert!(cli.trace.output.json);
    }

    #[test]
    fn rejects_bad_ports_sizes_and_flags() {
        for bad in [
            &["--port", "0"][..],
            &["--port", "65536"],
            &["--port", "http"],
            &["--pid", "0"],
            &["--ring-bytes", "5000"],
            &["--frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn demo_is_a_subcommand() {
        assert!(matches!(
            parse(&["demo"]).unwrap().command,
            Some(Command::Demo { .. })
        ));
    }
}
