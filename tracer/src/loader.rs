//! Loading the embedded kernel object, filling its filter maps, attaching its
//! programs. Every attachment is a bpf link owned by this process, so the
//! kernel detaches everything when the process ends, however it ends.
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FExit, ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use aya_log::EbpfLogger;
use tracer_common::{FlowKey, FlowStats, PortBits, Task, WANTS_GEN_MASK, Want, filter, port_set};

use crate::{event::comm_bytes, iface::Iface, misses, procfs::Listener, protocol::Control};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the kernel rejected program {program}: {reason}")]
    Program { program: &'static str, reason: String },
    #[error("cannot attach program {program}: {source}")]
    Attach {
        program: &'static str,
        source: ProgramError,
    },
    #[error("cannot use map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("cannot read the kernel's BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error(transparent)]
    Layout(#[from] crate::btf::LayoutError),
}

/// What the kernel side is told before it starts.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Ports at either end (`--port`), local (`-L`), remote (`-D`).
    pub ports: Vec<u16>,
    pub local_ports: Vec<u16>,
    pub remote_ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    /// Ship every segment of traced flows, not just resets, late segments
    /// and payload heads.
    pub all_segments: bool,
    pub capture_bytes: u32,
    pub max_flows: u32,
    pub ifaces: Vec<Iface>,
    pub ring_bytes: u32,
    /// Show the verifier's last lines when a program is rejected.
    pub verbose: bool,
    /// Listening sockets that existed before the tracer: their accepted
    /// sockets are attributed to the listener until `accept` says otherwise.
    pub listeners: Vec<Listener>,
}

/// What `load` hands over: the programs, their ring buffer and the kernel-log
/// reader. Each must live as long as the programs run (a dropped map closes its fd).
pub struct Loaded {
    pub programs: Programs,
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    pub events: RingBuf<MapData>,
}

/// The attached programs (their links die with this value), the drop counter
/// and the flow table.
pub struct Programs {
    _ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    recovered: PerCpuArray<MapData, u64>,
    flows: HashMap<MapData, FlowKey, FlowStats>,
    wants: HashMap<MapData, FlowKey, Want>,
    /// `wants`' generation, for the classifier: 0 while it is empty.
    wants_gen: aya::maps::Array<MapData, u32>,
    /// The keys `wants` holds.
    wanted: std::collections::HashSet<FlowKey, foldhash::fast::RandomState>,
    /// The last generation given out, and what `wants_gen` was last set to.
    generation: u32,
    told_gen: u32,
    /// Map updates the kernel refused (a full table): counted, reported.
    pub want_errors: u64,
}

impl Programs {
    /// Tells the classifier what payload the flows' protocol detectors need,
    /// then that `wants` changed: one generation for the whole batch.
    pub fn control(&mut self, controls: impl Iterator<Item = (FlowKey, Control)>) {
        let mut changed = false;
        for (key, control) in controls {
            self.control_one(&key, control);
            changed = true;
        }
        if changed {
            self.tell_wants_gen();
        }
    }

    fn control_one(&mut self, key: &FlowKey, control: Control) {
        let done = match control {
            Control::Set(want) => self.wants.insert(key, want, 0).map(|()| {
                self.wanted.insert(*key);
            }),
            Control::Delete if !self.wanted.remove(key) => Ok(()),
            Control::Delete => match self.wants.remove(key) {
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                other => other,
            },
        };
        if let Err(e) = done {
            self.want_errors += 1;
            log::debug!("payload request for a flow not taken: {e}");
        }
    }

    /// A new generation, which voids what flows cached of `wants`, or 0 once
    /// it is empty (which needs telling only once).
    fn tell_wants_gen(&mut self) {
        let told = if self.wanted.is_empty() {
            0
        } else {
            self.generation = (self.generation.wrapping_add(1) & WANTS_GEN_MASK).max(1);
            self.generation
        };
        if told == self.told_gen {
            return;
        }
        match self.wants_gen.set(0, told, 0) {
            Ok(()) => self.told_gen = told,
            Err(e) => {
                self.want_errors += 1;
                log::debug!("cannot tell the classifier whether payload requests exist: {e}");
            }
        }
    }

    /// A flow's counters right now: for sockets still open at exit.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowStats> {
        self.flows.get(key, 0).ok()
    }

    /// Events the kernel could not put on the ring buffer because it was full.
    pub fn dropped(&self) -> u64 {
        misses::per_cpu_total(&self.drops)
    }

    /// (state changes, retransmissions) the kernel programs never saw: runs
    /// the kernel skipped, less those the state program's second copy made
    /// up. `repeats` are second-copy transitions userspace found to be copies.
    pub fn missed(&self, repeats: u64) -> (u64, u64) {
        let skipped = misses::recursion_misses(&self._ebpf, "inet_sock_set_state");
        let made_up = misses::per_cpu_total(&self.recovered).saturating_sub(repeats);
        let state = skipped.saturating_sub(made_up);
        (state, misses::recursion_misses(&self._ebpf, "tcp_retransmit_skb"))
    }
}

fn filter_bits(s: &Settings) -> u32 {
    [
        (!s.ports.is_empty(), filter::PORTS),
        (!s.local_ports.is_empty(), filter::LOCAL_PORTS),
        (!s.remote_ports.is_empty(), filter::REMOTE_PORTS),
        (!s.pids.is_empty(), filter::PIDS),
        (!s.comms.is_empty(), filter::COMMS),
        (s.ipv4_only, filter::IPV4_ONLY),
        (s.ipv6_only, filter::IPV6_ONLY),
        (s.all_segments, filter::ALL_SEGMENTS),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit)
}

/// The kernel's port sets, by `port_set` index.
fn port_sets(s: &Settings) -> Vec<PortBits> {
    let mut sets = vec![[0u64; port_set::WORDS]; port_set::COUNT as usize];
    for (ports, set) in [
        (&s.ports, port_set::EITHER),
        (&s.local_ports, port_set::LOCAL),
        (&s.remote_ports, port_set::REMOTE),
    ] {
        for &p in ports {
            for set in [port_set::ANY, set] {
                sets[set as usize][usize::from(p / 64)] |= 1 << (p % 64);
            }
        }
    }
    sets
}

pub fn load(settings: &Settings) -> Result<Loaded, LoadError> {
    let filters = filter_bits(settings);
    // Wake userspace only when a quarter of the ring waits; it drains on a tick otherwise.
    let wakeup_bytes = u64::from(settings.ring_bytes / 4);
    let mut ebpf = EbpfLoader::new()
        .override_global("FILTERS", &filters, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("CAPTURE_BYTES", &settings.capture_bytes, true)
        .override_global("SOCK_LAYOUT", &crate::btf::sock_layout()?, true)
        .map_max_entries("EVENTS", settings.ring_bytes)
        .map_max_entries("FLOWS", settings.max_flows.max(1))
        .map_max_entries("WANTS", settings.max_flows.max(1))
        .load(OBJECT)
        .map_err(LoadError::Object)?;
    let logger = match EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::debug!("kernel log forwarding unavailable: {e}");
            None
        }
    };
    fill_ports(&mut ebpf, &port_sets(settings))?;
    fill(&mut ebpf, "PIDS", settings.pids.iter().map(|&p| (p, 1u8)))?;
    fill(&mut ebpf, "COMMS", settings.comms.iter().map(|c| (comm_bytes(c), 1u8)))?;
    fill(
        &mut ebpf,
        "LISTENERS",
        settings.listeners.iter().map(|l| {
            (
                l.port,
                Task {
                    pid: l.pid,
                    comm: comm_bytes(&l.comm),
                },
            )
        }),
    )?;
    let btf = Btf::from_sys_fs()?;
    // (program, hook) in attach order. The state program twice: the second
    // copy catches the transitions the kernel skips the first for, and must
    // run after it (see the kernel program).
    for (name, hook) in [
        ("inet_sock_set_state", "inet_sock_set_state"),
        ("set_state_nested", "inet_sock_set_state"),
        ("tcp_retransmit_skb", "tcp_retransmit_skb"),
    ] {
        attach_btf_tracepoint(&mut ebpf, name, hook, &btf, settings.verbose)?;
    }
    // Some kernels refuse fentry/fexit (this project's own VMs answer EPERM):
    // accepted sockets then keep their listener's owner, exact for a server
    // that accepts in the process that listens.
    if let Err(e) = attach_accept(&mut ebpf, &btf, settings.verbose) {
        log::info!("{e}: accepted sockets are attributed to the process that listens");
    }
    attach_classifiers(&mut ebpf, &settings.ifaces, settings.verbose)?;
    let events = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let drops = PerCpuArray::try_from(take(&mut ebpf, "DROPS")?).map_err(map_err("DROPS"))?;
    let recovered = PerCpuArray::try_from(take(&mut ebpf, "RECOVERED")?).map_err(map_err("RECOVERED"))?;
    let flows = HashMap::try_from(take(&mut ebpf, "FLOWS")?).map_err(map_err("FLOWS"))?;
    let wants = HashMap::try_from(take(&mut ebpf, "WANTS")?).map_err(map_err("WANTS"))?;
    let wants_gen = aya::maps::Array::try_from(take(&mut ebpf, "WANTS_GEN")?).map_err(map_err("WANTS_GEN"))?;
    Ok(Loaded {
        programs: Programs {
            _ebpf: ebpf,
            drops,
            recovered,
            flows,
            wants,
            wants_gen,
            wanted: Default::default(),
            generation: 0,
            told_gen: 0,
            want_errors: 0,
        },
        logger,
        events,
    })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |e| LoadError::Map {
        map,
        reason: e.to_string(),
    }
}

fn take(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(map).ok_or(LoadError::Map {
        map,
        reason: "not in the object".into(),
    })
}

fn fill_ports(ebpf: &mut Ebpf, sets: &[PortBits]) -> Result<(), LoadError> {
    const MAP: &str = "PORTS";
    let m = ebpf.map_mut(MAP).ok_or(LoadError::Map {
        map: MAP,
        reason: "not in the object".into(),
    })?;
    let mut ports = aya::maps::Array::<_, PortBits>::try_from(m).map_err(map_err(MAP))?;
    for (i, bits) in sets.iter().enumerate() {
        ports.set(i as u32, bits, 0).map_err(map_err(MAP))?;
    }
    Ok(())
}

fn fill<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    map: &'static str,
    entries: impl IntoIterator<Item = (K, V)>,
) -> Result<(), LoadError> {
    let m = ebpf.map_mut(map).ok_or(LoadError::Map {
        map,
        reason: "not in the object".into(),
    })?;
    let mut m = HashMap::<_, K, V>::try_from(m).map_err(map_err(map))?;
    for (k, v) in entries {
        m.insert(k, v, 0).map_err(map_err(map))?;
    }
    Ok(())
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    event: &str,
    btf: &Btf,
    verbose: bool,
) -> Result<(), LoadError> {
    let prog: &mut BtfTracePoint = program(ebpf, name)?;
    prog.load(event, btf).map_err(|e| rejected(name, e, verbose))?;
    prog.attach()
        .map_err(|source| LoadError::Attach { program: name, source })?;
    Ok(())
}

fn attach_accept(ebpf: &mut Ebpf, btf: &Btf, verbose: bool) -> Result<(), LoadError> {
    const NAME: &str = "inet_csk_accept";
    let prog: &mut FExit = program(ebpf, NAME)?;
    prog.load(NAME, btf).map_err(|e| rejected(NAME, e, verbose))?;
    prog.attach()
        .map_err(|source| LoadError::Attach { program: NAME, source })?;
    Ok(())
}

/// Ingress and egress of each interface, through TCX links (the kernel drops
/// them with our process). Loopback gets egress only: every loopback packet
/// passes egress and then ingress of `lo`, and must count once.
fn attach_classifiers(ebpf: &mut Ebpf, ifaces: &[Iface], verbose: bool) -> Result<(), LoadError> {
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    for (name, attach_type) in [
        ("tc_ingress", TcAttachType::Ingress),
        ("tc_egress", TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = program(ebpf, name)?;
        prog.load().map_err(|e| rejected(name, e, verbose))?;
        for iface in ifaces {
            if iface.loopback && attach_type == TcAttachType::Ingress {
                continue;
            }
            if !tcx {
                // Older kernels: a clsact qdisc and netlink filters, which aya
                // removes when the programs are dropped on exit.
                let _ = tc::qdisc_add_clsact(&iface.name);
            }
            if let Err(e) = prog.attach(&iface.name, attach_type) {
                log::warn!(
                    "cannot attach {name} to {}: {e}; its traffic is not counted",
                    iface.name
                );
            }
        }
    }
    Ok(())
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(LoadError::Program {
        program: name,
        reason: "not in the object".into(),
    })?;
    p.try_into().map_err(|e: ProgramError| LoadError::Program {
        program: name,
        reason: e.to_string(),
    })
}

/// One line by default; with `verbose`, the verifier's last lines, which name the cause.
fn rejected(program: &'static str, e: ProgramError, verbose: bool) -> LoadError {
    let reason = match &e {
        ProgramError::LoadError { io_error, verifier_log } => {
            if verbose {
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
                format!("{io_error}; the verifier's last lines:\n  {tail}")
            } else {
                format!("{io_error} (run with -v for the verifier's log)")
            }
        }
        other => other.to_string(),
    };
    LoadError::Program { program, reason }
}
