//! tracer's patch: byte lists and tables of finished header blocks and
//! decoders, kept per thread for the next ones, so that a decoder that has
//! run a while allocates nothing for strings or table entries.
use std::{cell::RefCell, collections::VecDeque};

/// Byte lists are kept by size, so that a short string takes a short list
/// and a table of short entries holds little more than they do.
const SIZES: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];
/// Lists kept of each size, and tables (of at most `LONGEST_TABLE` entries):
/// spares stay small.
const KEEP_BYTES: usize = 256;
const KEEP_TABLES: usize = 64;
const LONGEST_TABLE: usize = 128;

pub(crate) type Entry = (Vec<u8>, Vec<u8>);

thread_local! {
    static BYTES: RefCell<[Vec<Vec<u8>>; SIZES.len()]> = const { RefCell::new([const { Vec::new() }; SIZES.len()]) };
    static TABLES: RefCell<Vec<VecDeque<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// An empty byte list with room for `n` bytes, of the smallest size that
/// holds them.
pub(crate) fn bytes_for(n: usize) -> Vec<u8> {
    let Some(size) = SIZES.iter().position(|&size| size >= n) else {
        return Vec::with_capacity(n);
    };
    BYTES
        .with_borrow_mut(|kept| kept[size].pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZES[size]))
}

/// A copy of `b` in a spare list.
pub(crate) fn copy(b: &[u8]) -> Vec<u8> {
    let mut v = bytes_for(b.len());
    v.extend_from_slice(b);
    v
}

pub(crate) fn give_bytes(mut v: Vec<u8>) {
    if v.capacity() > SIZES[SIZES.len() - 1] {
        return;
    }
    let Some(size) = SIZES.iter().rposition(|&size| size <= v.capacity()) else {
        return;
    };
    v.clear();
    // While the thread exits the lists may be gone: `v` is then simply freed.
    let _ = BYTES.try_with(|kept| {
        let kept = &mut kept.borrow_mut()[size];
        if kept.len() < KEEP_BYTES {
            kept.push(v);
        }
    });
}

/// An empty table.
pub(crate) fn table() -> VecDeque<Entry> {
    TABLES.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Takes back a table and the lists of its entries.
pub(crate) fn give_table(mut t: VecDeque<Entry>) {
    for (name, value) in t.drain(..) {
        give_bytes(name);
        give_bytes(value);
    }
    if t.capacity() == 0 || t.capacity() > LONGEST_TABLE {
        return;
    }
    let _ = TABLES.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP_TABLES {
            s.push(t);
        }
    });
}
