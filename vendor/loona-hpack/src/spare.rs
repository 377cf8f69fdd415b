//! tracer's patch: byte lists and tables of finished header blocks and
//! decoders, kept per thread for the next ones, so that a decoder that has
//! run a while allocates nothing for strings or table entries.
use std::{cell::RefCell, collections::VecDeque};

/// Lists kept of each kind, and the longest kept: spares stay small.
const KEEP_BYTES: usize = 1024;
const LONGEST_BYTES: usize = 1024;
const KEEP_TABLES: usize = 64;
const LONGEST_TABLE: usize = 128;

pub(crate) type Entry = (Vec<u8>, Vec<u8>);

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static TABLES: RefCell<Vec<VecDeque<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// An empty byte list.
pub(crate) fn bytes() -> Vec<u8> {
    BYTES.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// A copy of `b` in a spare list.
pub(crate) fn copy(b: &[u8]) -> Vec<u8> {
    let mut v = bytes();
    v.extend_from_slice(b);
    v
}

pub(crate) fn give_bytes(mut v: Vec<u8>) {
    if v.capacity() == 0 || v.capacity() > LONGEST_BYTES {
        return;
    }
    v.clear();
    // While the thread exits the list may be gone: `v` is then simply freed.
    let _ = BYTES.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP_BYTES {
            s.push(v);
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
