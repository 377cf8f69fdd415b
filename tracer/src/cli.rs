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

fn port() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

#[derive(Debug, Args, Clone, Default)]
pub struct TraceArgs {
    /// Only connections with one of these ports at either end (comma list, repeatable).
    #[arg(long, value_delimiter = ',', value_name = "PORT", value_parser = port())]
    pub port: Vec<u16>,
    /// Only sockets with one of these local ports (comma list).
    #[arg(short = 'L', long = "local-port", value_delimiter = ',', value_name = "PORT", value_parser = port())]
    pub local_port: Vec<u16>,
    /// Only sockets with one of these remote ports (comma list).
    #[arg(short = 'D', long = "remote-port", value_delimiter = ',', value_name = "PORT", value_parser = port())]
    pub remote_port: Vec<u16>,
    /// Only sockets of these processes, including ones accepted later (comma list).
    #[arg(short = 'p', long, value_delimiter = ',', value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Vec<u32>,
    /// Only sockets of processes with this command name (comma list, repeatable).
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub comm: Vec<String>,
    /// IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Count segments on this interface (repeatable; default: every interface that is up).
    #[arg(long, value_name = "NAME")]
    pub iface: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also the live stream: every state change and every segment of traced flows.
    #[arg(long)]
    pub events: bool,
    /// On close, draw each connection as a ladder of its segments.
    #[arg(long, conflicts_with = "json")]
    pub diagram: bool,
    /// Wide address columns (for IPv6).
    #[arg(short = 'w', long)]
    pub wide: bool,
    /// A time column on connection lines.
    #[arg(short = 'T', long)]
    pub time: bool,
    /// Payload bytes captured from each message head that protocol detection needs (0-2048; 0 turns detection off).
    #[arg(long, value_name = "N", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(0..=2048))]
    pub capture_bytes: u32,
    /// Show query strings in paths (redacted by default; header values are never shown).
    #[arg(long)]
    pub no_redact: bool,
    /// Open sockets tracked at once; beyond it the oldest is evicted (and counted).
    #[arg(long, value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sockets: u32,
    /// Flows the kernel counts at once (an LRU table).
    #[arg(long, value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_flows: u32,
    /// Ring-buffer size in bytes: a power of two, at least one page.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = parse_ring_bytes)]
    pub ring_bytes: u32,
    /// Show more detail on errors (the verifier's last lines).
    #[arg(short, long)]
    pub verbose: bool,
    /// Also write every raw ring-buffer record to FILE (length-prefixed), for
    /// the userspace benchmark to replay.
    #[arg(long, value_name = "FILE", hide = true)]
    pub record: Option<std::path::PathBuf>,
}

impl Default for OutputArgs {
    fn default() -> Self {
        match Cli::try_parse_from(["tracer"]) {
            Ok(cli) => cli.trace.output,
            Err(e) => unreachable!("defaults parse: {e}"),
        }
    }
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
        let cli = parse(&[
            "--port",
            "80,443",
            "--port",
            "8080",
            "-p",
            "1,2",
            "-L",
            "22",
            "-D",
            "5432,6379",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.trace.port, vec![80, 443, 8080]);
        assert_eq!(cli.trace.pid, vec![1, 2]);
        assert_eq!(cli.trace.local_port, vec![22]);
        assert_eq!(cli.trace.remote_port, vec![5432, 6379]);
        assert!(cli.trace.output.json);
    }

    #[test]
    fn defaults() {
        let o = OutputArgs::default();
        assert_eq!((o.capture_bytes, o.max_sockets, o.ring_bytes), (2048, 65536, 4 << 20));
        assert!(!o.json && !o.events && !o.diagram);
    }

    #[test]
    fn rejects_bad_ports_sizes_and_flags() {
        for bad in [
            &["--port", "0"][..],
            &["--port", "65536"],
            &["--port", "http"],
            &["-L", "0"],
            &["--pid", "0"],
            &["--ring-bytes", "5000"],
            &["--capture-bytes", "2049"],
            &["-4", "-6"],
            &["--json", "--diagram"],
            &["--frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn demo_is_a_subcommand() {
        assert!(matches!(parse(&["demo"]).unwrap().command, Some(Command::Demo { .. })));
    }
}
