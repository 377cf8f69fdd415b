//! A tracing session: load, drain, decode, print; stop on a signal or when told.
use std::{
    future::Future,
    io::{self, BufWriter, Stdout, Write},
};

use anyhow::{Context, Result, bail};
use tokio::io::unix::AsyncFd;

use crate::{
    cli::{OutputArgs, TraceArgs},
    clock::WallClock,
    decode::decode,
    event::Event,
    loader::{self, Loaded, Programs, Settings},
    output::{Format, Output, Summary},
    preflight, procfs,
    reader::Reader,
};

pub struct Session<W: Write> {
    programs: Programs,
    reader: Reader,
    output: Output<W>,
    summary: Summary,
}

pub fn stdout() -> BufWriter<Stdout> {
    BufWriter::with_capacity(64 * 1024, io::stdout())
}

/// `tracer [--port ..] [--pid ..]`: trace until Ctrl-C or SIGTERM.
pub async fn trace(args: TraceArgs) -> Result<()> {
    for &pid in &args.pid {
        if !procfs::pid_exists(pid) {
            bail!("no process with pid {pid}");
        }
    }
    preflight::check_all()?;
    let settings = Settings {
        ports: args.port.clone(),
        pids: args.pid.clone(),
        ..settings(&args.output)
    };
    let mut session = Session::start(&settings, &args.output, stdout())?;
    eprintln!(
        "tracer: tracing TCP connections{}; Ctrl-C to stop",
        describe(&args)
    );
    session.output.header()?;
    session.output.flush()?;
    session.run_until(shutdown_signal()).await?;
    session.finish()?;
    Ok(())
}

/// What is traced, for the status line: " on ports 80, 443 of pid 7".
fn describe(args: &TraceArgs) -> String {
    let list = |v: &[String]| v.join(", ");
    let mut s = String::new();
    if !args.port.is_empty() {
        s += &format!(
            " on ports {}",
            list(&args.port.iter().map(u16::to_string).collect::<Vec<_>>())
        );
    }
    if !args.pid.is_empty() {
        s += &format!(
            " of pids {}",
            list(&args.pid.iter().map(u32::to_string).collect::<Vec<_>>())
        );
    }
    s
}

/// Kernel settings common to every mode.
pub fn settings(output: &OutputArgs) -> Settings {
    Settings {
        ring_bytes: output.ring_bytes,
        verbose: output.verbose,
        listeners: procfs::listeners(),
        ..Settings::default()
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

impl<W: Write> Session<W> {
    pub fn start(settings: &Settings, args: &OutputArgs, out: W) -> Result<Self> {
        let Loaded {
            programs,
            logger,
            events,
        } = loader::load(settings)?;
        if let Some(logger) = logger {
            forward_kernel_logs(logger);
        }
        let format = if args.json {
            Format::Json
        } else {
            Format::Text
        };
        Ok(Self {
            reader: Reader::new(events).context("cannot watch the ring buffer")?,
            programs,
            output: Output::new(format, WallClock::sample(), out),
            summary: Summary::default(),
        })
    }

    pub fn output(&mut self) -> &mut Output<W> {
        &mut self.output
    }

    /// Drain and print until `stop` completes, then drain what is left.
    pub async fn run_until(&mut self, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = self.reader.ready() => self.drain()?,
                _ = &mut stop => break,
            }
        }
        self.drain()
    }

    /// Print every event waiting in the ring buffer.
    pub fn drain(&mut self) -> Result<()> {
        let Self {
            reader,
            output,
            summary,
            ..
        } = self;
        let mut result = Ok(());
        reader.drain(|record| {
            summary.events += 1;
            match decode(record) {
                Ok(Event::State(s)) => {
                    if result.is_ok() {
                        result = output.state(&s);
                    }
                }
                Err(e) => {
                    summary.decode_errors += 1;
                    log::debug!("undecodable record: {e}");
                }
            }
        });
        result?;
        self.output.flush().context("cannot write to stdout")
    }

    /// The exit summary, drops included.
    pub fn finish(mut self) -> Result<W> {
        self.summary.dropped = self.programs.dropped();
        self.output.summary(&self.summary)?;
        Ok(self.output.into_inner())
    }
}

/// The kernel's aya-log records, printed through `log` (filtered by RUST_LOG).
fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns the logger.
    let mut fd =
        match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => return log::debug!("cannot watch kernel logs: {e}"),
        };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
