//! Spare allocations kept for reuse: a daemon that sees the same kinds of
//! connections over and over then allocates nothing for them once warm.
//! Each list is bounded, so what an idle moment keeps is small.
use std::cell::RefCell;

/// Spares kept of each kind: more than the sockets a busy host has finishing
/// at once (a storm of 6,000 connections a second keeps about 700 sockets
/// within their 60 ms grace period; a daemon that falls behind, more), so
/// that the kind does not run dry in a burst. Each is small: lists longer
/// than a few dozen entries are not kept.
pub const KEEP: usize = 4096;

pub struct Spares<T> {
    free: Vec<T>,
    keep: usize,
}

impl<T> std::fmt::Debug for Spares<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares").field("kept", &self.kept()).finish()
    }
}

impl<T> Spares<T> {
    pub const fn new(keep: usize) -> Self {
        Self { free: Vec::new(), keep }
    }

    pub fn kept(&self) -> usize {
        self.free.len()
    }

    pub fn take(&mut self) -> Option<T> {
        self.free.pop()
    }

    /// Keeps `t` for a later `take`, unless enough are kept already.
    pub fn give(&mut self, t: T) {
        if self.free.len() < self.keep {
            self.free.push(t);
        }
    }
}

impl<T> Spares<Box<T>> {
    /// `t` in a kept box, if there is one.
    pub fn boxed(&mut self, t: T) -> Box<T> {
        match self.take() {
            Some(mut kept) => {
                *kept = t;
                kept
            }
            None => Box::new(t),
        }
    }
}

impl<T> Spares<Vec<T>> {
    /// Keeps `list` emptied, unless it grew longer than `longest`: a list
    /// grown by a long life is let go, so spares stay small.
    pub fn give_list(&mut self, mut list: Vec<T>, longest: usize) {
        if list.capacity() > 0 && list.capacity() <= longest {
            list.clear();
            self.give(list);
        }
    }
}

/// Spares kept per thread: the parsers are made deep inside a flow's tracker,
/// where no owner's list is at hand (the daemon correlates on one thread).
pub type Local<T> = std::thread::LocalKey<RefCell<Spares<T>>>;

pub fn take<T>(local: &'static Local<T>) -> Option<T> {
    local.with_borrow_mut(Spares::take)
}

pub fn give<T>(local: &'static Local<T>, t: T) {
    // While the thread exits its list may be gone: `t` is then simply freed.
    let _ = local.try_with(|s| s.borrow_mut().give(t));
}

/// Request lists, kept by size. A list about to grow moves into a kept one
/// of a larger size instead, so that once each size has been needed no list
/// grows anew, whichever flow happens to take which list.
pub struct Lists<T> {
    by_size: [Spares<Vec<T>>; SIZES.len()],
}

/// A list sits with the largest of these its capacity holds; lists grow by
/// doubling from 4, and copies are made in these sizes (a flow keeps at most
/// `MAX_REQUESTS` requests).
const SIZES: [usize; 9] = [4, 8, 16, 32, 64, 128, 256, 512, crate::MAX_REQUESTS];

pub type LocalLists<T> = std::thread::LocalKey<RefCell<Lists<T>>>;

impl<T> Lists<T> {
    /// Fewer of each size as they grow: what is kept stays under 100,000
    /// entries of each kind (5.3 MiB of HTTP/1 requests).
    pub const fn new() -> Self {
        Self {
            by_size: [
                Spares::new(KEEP),
                Spares::new(KEEP),
                Spares::new(KEEP / 8),
                Spares::new(KEEP / 16),
                Spares::new(KEEP / 32),
                Spares::new(32),
                Spares::new(16),
                Spares::new(8),
                Spares::new(8),
            ],
        }
    }

    /// The smallest kept list with room for `n` entries.
    fn take(&mut self, n: usize) -> Option<Vec<T>> {
        let sizes = self.by_size.iter_mut().zip(SIZES);
        sizes.filter(|(_, size)| *size >= n).find_map(|(kept, _)| kept.take())
    }

    fn give(&mut self, mut list: Vec<T>) {
        let room = list.capacity();
        if room > crate::MAX_REQUESTS {
            return;
        }
        if let Some(size) = SIZES.iter().rposition(|&size| size <= room) {
            list.clear();
            self.by_size[size].give(list);
        }
    }
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty request list.
pub fn list<T>(local: &'static LocalLists<T>) -> Vec<T> {
    local.with_borrow_mut(|l| l.take(0)).unwrap_or_default()
}

/// A copy of `items` in a spare list, else in a new one of a kept size.
pub fn copy_of<T: Clone>(local: &'static LocalLists<T>, items: &[T]) -> Vec<T> {
    let n = items.len();
    let mut list = local.with_borrow_mut(|l| l.take(n)).unwrap_or_else(|| {
        let size = SIZES.iter().find(|&&size| size >= n);
        Vec::with_capacity(size.map_or(n, |&size| size))
    });
    list.extend_from_slice(items);
    list
}

pub fn give_list<T>(local: &'static LocalLists<T>, list: Vec<T>) {
    // While the thread exits its lists may be gone: `list` is then simply freed.
    let _ = local.try_with(|l| l.borrow_mut().give(list));
}

/// Before a push: a full list moves into the smallest kept one with more room.
pub fn room_for_one<T>(local: &'static LocalLists<T>, list: &mut Vec<T>) {
    if list.len() < list.capacity() {
        return;
    }
    let Some(mut larger) = local.with_borrow_mut(|l| l.take(list.len() + 1)) else {
        return;
    };
    larger.append(list);
    std::mem::swap(&mut larger, list);
    give_list(local, larger);
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static LISTS: RefCell<Lists<u32>> = const { RefCell::new(Lists::new()) };
    }

    /// Pushes as a parser does, and says whether the push had to grow the list.
    fn push(list: &mut Vec<u32>, x: u32) -> bool {
        room_for_one(&LISTS, list);
        let grows = list.len() == list.capacity();
        list.push(x);
        grows
    }

    /// Flows of 1, 6 and 300 requests, over and over: the lists they grow
    /// are kept by size, and once warm no push grows a list, in whichever
    /// order the flows take them.
    #[test]
    fn once_warm_no_list_grows() {
        for round in 0..3 {
            let mut flows: Vec<Vec<u32>> = (0..3).map(|_| list(&LISTS)).collect();
            if round % 2 == 1 {
                flows.reverse();
            }
            let mut grown = 0;
            for (flow, n) in flows.iter_mut().zip([1, 6, 300]) {
                grown += (0..n).filter(|&x| push(flow, x)).count();
                assert!(flow.iter().copied().eq(0..n), "entries kept in order across moves");
            }
            let copies: Vec<Vec<u32>> = flows.iter().map(|f| copy_of(&LISTS, f)).collect();
            assert_eq!(copies, flows);
            if round > 0 {
                assert_eq!(grown, 0, "round {round}");
            }
            for l in flows.into_iter().chain(copies) {
                give_list(&LISTS, l);
            }
        }
    }

    #[test]
    fn spares_are_bounded_and_long_lists_let_go() {
        let mut s = Spares::new(2);
        s.give_list(Vec::<u8>::with_capacity(64), 16);
        s.give_list(Vec::new(), 16);
        assert_eq!(s.kept(), 0, "a long list and an empty one are not kept");
        for _ in 0..3 {
            s.give_list(vec![1u8, 2, 3], 16);
        }
        assert_eq!(s.kept(), 2);
        assert!(s.take().is_some_and(|l| l.is_empty() && l.capacity() >= 3));
    }
}
