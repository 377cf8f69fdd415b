//! The userspace pipeline on one core: recorded, realistic event streams
//! (`cargo xtask record`: storm connections, keep-alive exchanges, a bulk
//! transfer, aborts and refused connects, WebSocket, HTTP/2 and TLS
//! exchanges) replayed through decode, correlation and JSON output, stage by
//! stage and end to end: the default mode's stream, which is what the daemon
//! sees unless asked for more, and the `--events` mode's, every segment.
use std::{
    alloc::{GlobalAlloc, Layout as AllocLayout},
    hint::black_box,
    io::Write,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    clock::WallClock,
    connection::Connection,
    correlate::{Correlator, Limits},
    decode::decode,
    event::Event,
    output::{Format, Layout, Output},
};

/// The daemon's allocator, counted while `COUNTING` is set: this replays
/// what the daemon does, and says how often it allocates.
struct Counted;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to mimalloc unchanged.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        count();
        // SAFETY: as the caller promised.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        count();
        // SAFETY: as the caller promised.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as the caller promised.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: as the caller promised.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counted = Counted;

/// Allocations (and reallocations) of end-to-end replays, written beside
/// criterion's figures for `cargo xtask bench`: a fresh pipeline's first
/// replay (its tables and spares grow), then replays through the same
/// pipeline, as a daemon that has run a while sees the same traffic, until
/// one allocates nothing, or no less than the one before: the steady state.
fn allocations(records: &[Vec<u8>], group: &str) {
    let mut pipeline = Pipeline::new(Digest::default());
    let (first, made) = counted(|| pipeline.replay(records, true));
    let printed = std::mem::take(pipeline.output.get_mut());
    assert!(printed.len > 0, "the replay printed nothing");
    let (mut steady, mut replays) = (first, 1);
    while replays < MAX_REPLAYS {
        let (n, again) = counted(|| pipeline.replay(records, true));
        replays += 1;
        // Spares handed from one socket to the next must carry nothing over.
        assert_eq!(made, again, "replay {replays} made other records than the first");
        let output = std::mem::take(pipeline.output.get_mut());
        assert_eq!(printed, output, "replay {replays} printed other records than the first");
        let settled = n == 0 || n >= steady;
        steady = n;
        if settled {
            break;
        }
    }
    let dir = format!(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion/{}"), group);
    std::fs::create_dir_all(&dir).expect("cannot create criterion's output directory");
    let json = format!(
        "{{\"allocations\":{steady},\"first\":{first},\"replays\":{replays},\"events\":{},\"connections\":{made}}}\n",
        records.len()
    );
    std::fs::write(format!("{dir}/allocations.json"), json).expect("cannot write allocations.json");
}

/// Replays for the steady state, at most.
const MAX_REPLAYS: u32 = 10;

/// What was printed, folded into a hash (FNV-1a's step, from 0) and a length: comparing two
/// replays' output without keeping it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Digest {
    hash: u64,
    len: u64,
}

impl Write for Digest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with the allocator counting: its allocations, and what it returned.
fn counted<T>(f: impl FnOnce() -> T) -> (u64, T) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let out = black_box(f());
    COUNTING.store(false, Ordering::Relaxed);
    (ALLOCATIONS.load(Ordering::Relaxed), out)
}

/// The recorded streams: criterion's group for each, and its file (as
/// `STREAMS` in xtask's `bench/pipeline.rs`, which reads the figures).
const STREAMS: [(&str, &str); 2] = [
    ("pipeline_default", "stream.bin"),
    ("pipeline_events", "stream-events.bin"),
];

fn records(file: &str) -> Vec<Vec<u8>> {
    let path = format!(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/{}"), file);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run `cargo xtask record`"));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= raw.len() {
        let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        out.push(raw[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    // A recording from before an event layout changed decodes in part, and
    // a replay of the rest would measure a different stream, quietly.
    let stale = out.iter().filter(|r| decode(r).is_err()).count();
    assert!(
        stale == 0,
        "{stale} of {} recorded events do not decode: {file} is older than the event layouts; \
         run `cargo xtask record`",
        out.len()
    );
    out
}

fn limits() -> Limits {
    Limits {
        max_sockets: 65536,
        segments_per_flow: 64,
        grace_ns: 60_000_000,
        keep_segments: false,
        detect: true,
    }
}

fn ts(e: &Event) -> Option<u64> {
    match e {
        Event::State(s) => Some(s.ts_ns),
        Event::Close(c) => Some(c.state.ts_ns),
        Event::Segment(s, _) => Some(s.ts_ns),
        Event::Owner { .. } => None,
    }
}

/// What the daemon runs every event through.
struct Pipeline<W: Write> {
    correlator: Correlator,
    output: Output<W>,
    finished: Vec<Connection>,
}

impl<W: Write> Pipeline<W> {
    fn new(out: W) -> Self {
        Self {
            correlator: Correlator::new(limits()),
            output: Output::new(Format::Json, Layout::default(), WallClock::fixed(0, 0), out),
            finished: Vec::new(),
        }
    }

    /// Decode, correlate and (optionally) print every record, as the daemon
    /// does; returns the connection records made. Every socket is finished
    /// at the end, so the pipeline can replay the stream again.
    fn replay(&mut self, records: &[Vec<u8>], print: bool) -> u64 {
        let mut now = 0;
        let mut made = 0;
        for r in records {
            let Ok(mut event) = decode(r) else { continue };
            now = ts(&event).map_or(now, |t| now.max(t));
            self.correlator.resolve_owner(&mut event);
            self.correlator.on_event(&event, now, &mut self.finished);
            // The daemon hands these to the kernel after each batch.
            self.correlator.controls.clear();
            made += self.print(print);
        }
        self.correlator.flush(now + 1_000_000_000, |_| None, &mut self.finished);
        made += self.print(print);
        self.output.flush().unwrap();
        made
    }

    fn print(&mut self, print: bool) -> u64 {
        let n = self.finished.len() as u64;
        for c in self.finished.drain(..) {
            if print {
                self.output.connection(&c).unwrap();
            }
            self.correlator.reuse(c);
        }
        n
    }
}

fn pipeline(c: &mut Criterion) {
    for (group, file) in STREAMS {
        replays(c, group, &records(file));
    }
}

fn replays(c: &mut Criterion, group: &str, records: &[Vec<u8>]) {
    allocations(records, group);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for r in records {
                let _ = black_box(decode(black_box(r)));
            }
        })
    });
    // One pipeline for every iteration, as one daemon sees traffic for
    // hours: its tables and spares are warm after the first.
    g.bench_function("decode_correlate", |b| {
        let mut pipeline = Pipeline::new(std::io::sink());
        b.iter(|| black_box(pipeline.replay(records, false)))
    });
    g.bench_function("end_to_end", |b| {
        let mut pipeline = Pipeline::new(std::io::sink());
        b.iter(|| black_box(pipeline.replay(records, true)))
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
