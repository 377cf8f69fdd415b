//! A tracing session: load, drain, decode, correlate, print; stop on a signal
//! or when told.
use std::{
    collections::HashMap,
    future::Future,
    io::{self, BufWriter, Stdout, Write},
};

use anyhow::{Context, Result, bail};
use tokio::io::unix::AsyncFd;

use crate::{
    cli::{OutputArgs, TraceArgs},
    clock::{WallClock, monotonic_ns},
    connection::{Connection, Role},
    correlate::{Correlator, Limits},
    decode::decode,
    event::Event,
    iface::{self, Iface},
    loader::{self, Loaded, Programs, Settings},
    output::{Format, Layout, Output, Summary},
    preflight,
    priority::Yielding,
    procfs,
    reader::Reader,
};

/// What a session prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Show {
    /// Every state change and shipped segment, live.
    pub events: bool,
    /// A ladder diagram per closed connection, for these roles.
    pub diagrams: Option<DiagramFor>,
    /// A line or record per closed connection.
    pub connections: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagramFor {
    Every,
    /// Only the client side: one diagram per connection, as in the demo.
    Clients,
}

impl Show {
    pub fn from_args(args: &OutputArgs) -> Self {
        Self {
            events: args.events,
            diagrams: args.diagram.then_some(DiagramFor::Every),
            connections: true,
        }
    }
}

pub struct Session<W: Write> {
    programs: Programs,
    reader: Reader,
    output: Output<W>,
    correlator: Correlator,
    finished: Vec<Connection>,
    show: Show,
    summary: Summary,
    /// Raw records, length-prefixed, for `--record`.
    record: Option<BufWriter<std::fs::File>>,
    /// The drain loop's thread at `SCHED_IDLE` while events come, when it
    /// yields the CPU.
    yielding: Option<Yielding>,
}

pub fn stdout() -> BufWriter<Stdout> {
    BufWriter::with_capacity(64 * 1024, io::stdout())
}

/// A closed socket waits this long for segments handled after its close.
const GRACE_NS: u64 = 60_000_000;

/// `tracer [filters]`: trace until Ctrl-C or SIGTERM.
pub async fn trace(args: TraceArgs) -> Result<()> {
    for &pid in &args.pid {
        if !procfs::pid_exists(pid) {
            bail!("no process with pid {pid}");
        }
    }
    let ifaces = interfaces(&args.iface)?;
    preflight::check_all()?;
    let settings = Settings {
        ports: args.port.clone(),
        local_ports: args.local_port.clone(),
        remote_ports: args.remote_port.clone(),
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        ipv4_only: args.ipv4,
        ipv6_only: args.ipv6,
        ..settings(&args.output, ifaces)
    };
    let show = Show::from_args(&args.output);
    let mut session = Session::start(&settings, &args.output, show, stdout())?;
    session.yield_cpu();
    eprintln!("tracer: tracing TCP connections{}; Ctrl-C to stop", describe(&args));
    session.output.header()?;
    session.output.flush()?;
    session.run_until(shutdown_signal()).await?;
    session.finish()?;
    Ok(())
}

/// `--iface` names, or every interface that is up.
pub fn interfaces(names: &[String]) -> Result<Vec<Iface>> {
    if names.is_empty() {
        return Ok(iface::all_up());
    }
    names.iter().map(|n| iface::by_name(n).map_err(Into::into)).collect()
}

/// What is traced, for the status line: " on ports 80, 443 of pids 7".
fn describe(args: &TraceArgs) -> String {
    let list = |label: &str, v: Vec<String>| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" {label} {}", v.join(", "))
        }
    };
    let nums = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>();
    [
        list("on ports", nums(&args.port)),
        list("on local ports", nums(&args.local_port)),
        list("on remote ports", nums(&args.remote_port)),
        list("of pids", args.pid.iter().map(u32::to_string).collect()),
        list("of commands", args.comm.clone()),
    ]
    .concat()
}

/// Kernel settings common to every mode.
pub fn settings(output: &OutputArgs, ifaces: Vec<Iface>) -> Settings {
    Settings {
        ring_bytes: output.ring_bytes,
        verbose: output.verbose,
        all_segments: output.events || output.diagram,
        capture_bytes: output.capture_bytes,
        max_flows: output.max_flows,
        listeners: procfs::listeners(),
        ifaces,
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
    pub fn start(settings: &Settings, args: &OutputArgs, show: Show, out: W) -> Result<Self> {
        let Loaded {
            programs,
            logger,
            events,
        } = loader::load(settings)?;
        if let Some(logger) = logger {
            forward_kernel_logs(logger);
        }
        let format = if args.json { Format::Json } else { Format::Text };
        let layout = Layout {
            wide: args.wide,
            time: args.time,
        };
        let mut output = Output::new(format, layout, WallClock::sample(), out);
        output.set_redact(!args.no_redact);
        output.set_ifnames(
            settings
                .ifaces
                .iter()
                .map(|i| (i.index, i.name.clone()))
                .collect::<HashMap<_, _>>(),
        );
        let listeners = settings.listeners.iter().map(|l| (l.port, l.process()));
        let limits = Limits {
            max_sockets: args.max_sockets as usize,
            segments_per_flow: if show.diagrams.is_some() { 4096 } else { 64 },
            grace_ns: GRACE_NS,
            keep_segments: show.diagrams.is_some(),
            detect: args.capture_bytes > 0,
        };
        Ok(Self {
            reader: Reader::new(events).context("cannot watch the ring buffer")?,
            programs,
            output,
            correlator: Correlator::new(limits).with_listeners(listeners),
            finished: Vec::new(),
            show,
            summary: Summary::default(),
            record: match &args.record {
                Some(path) => Some(BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => None,
            },
            yielding: None,
        })
    }

    /// From now on the drain loop, on this thread, runs below the traced
    /// service's threads while events come (see `priority`).
    pub fn yield_cpu(&mut self) {
        self.yielding = Yielding::start();
        self.beat();
    }

    /// Tells the watchdog, if any, the drain loop is alive and when it next ticks.
    fn beat(&self) {
        if let Some(y) = &self.yielding {
            y.beat(self.reader.next_tick_in(), self.reader.quiet());
        }
    }

    /// Drain, wait out the grace period of sockets that just closed, drain
    /// again: everything the last step caused is printed.
    pub async fn settle(&mut self) -> Result<()> {
        self.drain()?;
        tokio::time::sleep(std::time::Duration::from_nanos(GRACE_NS) + crate::reader::TICK).await;
        self.drain()
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
            self.beat();
        }
        // The normal policy again, for the last drain and the summary.
        self.yielding = None;
        self.drain()
    }

    /// Handle every event waiting in the ring buffer, and print what finished.
    pub fn drain(&mut self) -> Result<()> {
        let Self {
            reader,
            output,
            summary,
            correlator,
            finished,
            show,
            record: recorder,
            ..
        } = self;
        let now = monotonic_ns();
        let mut result = Ok(());
        reader.drain(|record| {
            summary.events += 1;
            summary.ring_bytes += record.len() as u64;
            if let Some(w) = recorder.as_mut() {
                let _ = w
                    .write_all(&(record.len() as u32).to_le_bytes())
                    .and_then(|_| w.write_all(record));
            }
            match decode(record) {
                Ok(mut event) => {
                    correlator.resolve_owner(&mut event);
                    if show.events && result.is_ok() {
                        result = live(output, &event);
                    }
                    correlator.on_event(&event, now, finished);
                }
                Err(e) => {
                    summary.decode_errors += 1;
                    log::debug!("undecodable record: {e}");
                }
            }
        });
        result?;
        self.correlator.tick(now, &mut self.finished);
        if let Some(due) = self.correlator.next_due_ns() {
            self.reader
                .tick_within(std::time::Duration::from_nanos(due.saturating_sub(now)));
        }
        self.programs.control(self.correlator.controls.drain(..));
        self.print_finished()?;
        self.output.flush().context("cannot write to stdout")
    }

    fn print_finished(&mut self) -> Result<()> {
        for c in self.finished.drain(..) {
            self.summary.connections += 1;
            self.summary.uncounted_sockets += u64::from(!c.counted);
            if self.show.connections {
                self.output.connection(&c)?;
            }
            let drawn = match self.show.diagrams {
                Some(DiagramFor::Every) => true,
                Some(DiagramFor::Clients) => c.role == Role::Client,
                None => false,
            };
            if drawn {
                self.output.diagram(&c)?;
            }
            self.correlator.reuse(c);
        }
        Ok(())
    }

    /// Everything still held is final now: closed sockets, and open ones as
    /// `open_at_exit`. Then the summary, drops and evictions included.
    pub fn finish(mut self) -> Result<W> {
        if let Some(w) = self.record.as_mut() {
            w.flush().context("cannot write the record file")?;
        }
        let programs = &self.programs;
        self.correlator
            .flush(monotonic_ns(), |key| programs.flow(key), &mut self.finished);
        self.print_finished()?;
        self.summary.dropped = self.programs.dropped();
        self.summary.evicted = self.correlator.evicted;
        self.summary.unfinished_sockets = self.correlator.unfinished;
        self.summary.payload_requests_refused = self.programs.want_errors;
        self.summary.payload_gaps = self.correlator.payload_gaps;
        (self.summary.missed_state_changes, self.summary.missed_retransmits) =
            self.programs.missed(self.correlator.repeats);
        self.output.summary(&self.summary)?;
        Ok(self.output.into_inner())
    }
}

/// An event as the live stream shows it.
fn live<W: Write>(output: &mut Output<W>, event: &Event) -> io::Result<()> {
    match event {
        Event::State(s) => output.state(s),
        Event::Close(c) => output.state(&c.state),
        Event::Segment(seg, _) => output.packet(seg),
        Event::Owner { .. } => Ok(()),
    }
}

/// The kernel's aya-log records, printed through `log` (filtered by RUST_LOG).
fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
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
