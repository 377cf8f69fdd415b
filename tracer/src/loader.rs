//! Loading the embedded kernel object, filling its filter maps, attaching its
//! programs. Every attachment is a bpf link owned by this process, so the
//! kernel detaches everything when the process ends, however it ends.
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FExit, ProgramError, TracePoint},
};
use aya_log::EbpfLogger;
use tracer_common::{COMM_LEN, Task, filter};

use crate::procfs::Listener;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the kernel rejected program {program}: {reason}")]
    Program {
        program: &'static str,
        reason: String,
    },
    #[error("cannot attach program {program}: {source}")]
    Attach {
        program: &'static str,
        source: ProgramError,
    },
    #[error("cannot use map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("cannot read the kernel's BTF: {0}")]
    Btf(#[from] aya::BtfError),
}

/// What the kernel side is told before it starts.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
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

/// The attached programs (their links die with this value) and the drop counter.
pub struct Programs {
    _ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
}

impl Programs {
    /// Events the kernel could not put on the ring buffer because it was full.
    pub fn dropped(&self) -> u64 {
        self.drops.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

pub fn load(settings: &Settings) -> Result<Loaded, LoadError> {
    let mut filters = 0u32;
    if !settings.ports.is_empty() {
        filters |= filter::PORTS;
    }
    if !settings.pids.is_empty() {
        filters |= filter::PIDS;
    }
    // Wake userspace only when a quarter of the ring waits; it drains on a tick otherwise.
    let wakeup_bytes = u64::from(settings.ring_bytes / 4);
    let mut ebpf = EbpfLoader::new()
        .override_global("FILTERS", &filters, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .map_max_entries("EVENTS", settings.ring_bytes)
        .load(OBJECT)
        .map_err(LoadError::Object)?;
    let logger = match EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::debug!("kernel log forwarding unavailable: {e}");
            None
        }
    };
    fill_u8_set::<u16>(&mut ebpf, "PORTS", &settings.ports)?;
    fill_u8_set::<u32>(&mut ebpf, "PIDS", &settings.pids)?;
    seed_listeners(&mut ebpf, &settings.listeners)?;
    attach_tracepoint(&mut ebpf, "inet_sock_set_state", "sock", settings.verbose)?;
    // Some kernels refuse fentry/fexit (this project's own VMs answer EPERM):
    // accepted sockets then keep their listener's owner, exact for a server
    // that accepts in the process that listens.
    if let Err(e) = attach_accept(&mut ebpf, settings.verbose) {
        log::info!("{e}: accepted sockets are attributed to the process that listens");
    }
    let events = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let drops = PerCpuArray::try_from(take(&mut ebpf, "DROPS")?).map_err(map_err("DROPS"))?;
    Ok(Loaded {
        programs: Programs { _ebpf: ebpf, drops },
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

fn fill_u8_set<K: aya::Pod>(
    ebpf: &mut Ebpf,
    map: &'static str,
    keys: &[K],
) -> Result<(), LoadError> {
    let m = ebpf.map_mut(map).ok_or(LoadError::Map {
        map,
        reason: "not in the object".into(),
    })?;
    let mut set = HashMap::<_, K, u8>::try_from(m).map_err(map_err(map))?;
    for k in keys {
        set.insert(k, 1, 0).map_err(map_err(map))?;
    }
    Ok(())
}

fn seed_listeners(ebpf: &mut Ebpf, listeners: &[Listener]) -> Result<(), LoadError> {
    const MAP: &str = "LISTENERS";
    let m = ebpf.map_mut(MAP).ok_or(LoadError::Map {
        map: MAP,
        reason: "not in the object".into(),
    })?;
    let mut map = HashMap::<_, u16, Task>::try_from(m).map_err(map_err(MAP))?;
    for l in listeners {
        let mut comm = [0u8; COMM_LEN];
        let n = l.comm.len().min(COMM_LEN - 1);
        comm[..n].copy_from_slice(&l.comm.as_bytes()[..n]);
        map.insert(l.port, Task { pid: l.pid, comm }, 0)
            .map_err(map_err(MAP))?;
    }
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    verbose: bool,
) -> Result<(), LoadError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load().map_err(|e| rejected(name, e, verbose))?;
    prog.attach(category, name)
        .map_err(|source| LoadError::Attach {
            program: name,
            source,
        })?;
    Ok(())
}

fn attach_accept(ebpf: &mut Ebpf, verbose: bool) -> Result<(), LoadError> {
    const NAME: &str = "inet_csk_accept";
    let btf = Btf::from_sys_fs()?;
    let prog: &mut FExit = program(ebpf, NAME)?;
    prog.load(NAME, &btf)
        .map_err(|e| rejected(NAME, e, verbose))?;
    prog.attach().map_err(|source| LoadError::Attach {
        program: NAME,
        source,
    })?;
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
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
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
