//! The userspace pipeline on one core: a recorded, realistic event stream
//! (`cargo xtask record`: storm connections, keep-alive exchanges, a bulk
//! transfer, aborts and refused connects, every segment of each) replayed
//! through decode, correlation and JSON output, stage by stage and end to end.
use std::{
    alloc::{GlobalAlloc, Layout as AllocLayout},
    hint::black_box,
    io::Write,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    clock::WallClock,
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

/// Allocations (and reallocations) of one end-to-end replay, written beside
/// criterion's figures for `cargo xtask bench`.
fn allocations(records: &[Vec<u8>]) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let connections = black_box(replay(records, true));
    COUNTING.store(false, Ordering::Relaxed);
    let n = ALLOCATIONS.load(Ordering::Relaxed);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion/pipeline");
    std::fs::create_dir_all(dir).expect("cannot create criterion's output directory");
    let json = format!(
        "{{\"allocations\":{n},\"events\":{},\"connections\":{connections}}}\n",
        records.len()
    );
    std::fs::write(format!("{dir}/allocations.json"), json).expect("cannot write allocations.json");
}

fn records() -> Vec<Vec<u8>> {
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/stream.bin")).expect("stream.bin");
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
        "{stale} of {} recorded events do not decode: stream.bin is older than the event layouts; \
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

/// Decode, correlate and (optionally) print every record, as the daemon does;
/// returns the connection records made.
fn replay(records: &[Vec<u8>], print: bool) -> u64 {
    let mut correlator = Correlator::new(limits());
    let mut output = Output::new(Format::Json, Layout::default(), WallClock::fixed(0, 0), std::io::sink());
    let mut finished = Vec::new();
    let mut now = 0;
    let mut made = 0;
    for r in records {
        let Ok(mut event) = decode(r) else { continue };
        now = ts(&event).map_or(now, |t| now.max(t));
        correlator.resolve_owner(&mut event);
        correlator.on_event(&event, now, &mut finished);
        made += finished.len() as u64;
        for c in finished.drain(..) {
            if print {
                output.connection(&c).unwrap();
            }
        }
    }
    correlator.flush(now + 1_000_000_000, |_| None, &mut finished);
    output.flush().unwrap();
    let _ = std::io::sink().flush();
    made + finished.len() as u64
}

fn pipeline(c: &mut Criterion) {
    let records = records();
    allocations(&records);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for r in &records {
                let _ = black_box(decode(black_box(r)));
            }
        })
    });
    g.bench_function("decode_correlate", |b| b.iter(|| black_box(replay(&records, false))));
    g.bench_function("end_to_end", |b| b.iter(|| black_box(replay(&records, true))));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
