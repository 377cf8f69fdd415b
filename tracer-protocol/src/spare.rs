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

/// Request lists, kept in two sizes: many of up to `SHORT_LIST` entries, and
/// a few of up to `MAX_REQUESTS` for the flows that carry hundreds of requests,
/// so that even those do not grow a list anew.
pub struct Lists<T> {
    short: Spares<Vec<T>>,
    long: Spares<Vec<T>>,
}

const SHORT_LIST: usize = 64;
const LONG_KEPT: usize = 8;

pub type LocalLists<T> = std::thread::LocalKey<RefCell<Lists<T>>>;

impl<T> Lists<T> {
    pub const fn new() -> Self {
        Self {
            short: Spares::new(KEEP),
            long: Spares::new(LONG_KEPT),
        }
    }
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Lists<T> {
    /// An empty list for `n` entries, if one is kept.
    fn take(&mut self, n: usize) -> Option<Vec<T>> {
        let long = (n > SHORT_LIST).then(|| self.long.take()).flatten();
        long.or_else(|| self.short.take())
    }

    fn give(&mut self, list: Vec<T>) {
        match list.capacity() {
            0..=SHORT_LIST => self.short.give_list(list, SHORT_LIST),
            _ => self.long.give_list(list, crate::MAX_REQUESTS),
        }
    }
}

/// An empty request list.
pub fn list<T>(local: &'static LocalLists<T>) -> Vec<T> {
    local.with_borrow_mut(|l| l.take(0)).unwrap_or_default()
}

/// A copy of `items` in a spare list, if one is kept.
pub fn copy_of<T: Clone>(local: &'static LocalLists<T>, items: &[T]) -> Vec<T> {
    let mut list = local.with_borrow_mut(|l| l.take(items.len())).unwrap_or_default();
    list.extend_from_slice(items);
    list
}

pub fn give_list<T>(local: &'static LocalLists<T>, list: Vec<T>) {
    // While the thread exits its lists may be gone: `list` is then simply freed.
    let _ = local.try_with(|l| l.borrow_mut().give(list));
}

/// Before a push: a full list past the short size moves into a kept long
/// one, if there is one with more room.
pub fn room_for_one<T>(local: &'static LocalLists<T>, list: &mut Vec<T>) {
    if list.len() < list.capacity() || list.len() < SHORT_LIST {
        return;
    }
    let Some(mut long) = local.with_borrow_mut(|l| l.long.take()) else {
        return;
    };
    if long.capacity() > list.len() {
        long.append(list);
        std::mem::swap(&mut long, list);
    }
    give_list(local, long);
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static LISTS: RefCell<Lists<u32>> = const { RefCell::new(Lists::new()) };
    }

    /// A flow with hundreds of requests moves into a long list kept from an
    /// earlier one, and gives it back for the next.
    #[test]
    fn a_long_list_goes_from_flow_to_flow() {
        let mut first = list(&LISTS);
        first.extend(0..300);
        let long_room = first.capacity();
        give_list(&LISTS, first);
        let mut second = list(&LISTS);
        second.extend(0..SHORT_LIST as u32);
        second.shrink_to_fit();
        room_for_one(&LISTS, &mut second);
        assert_eq!(second.capacity(), long_room, "moved into the kept long list");
        assert!(second.iter().copied().eq(0..SHORT_LIST as u32));
        let copy = copy_of(&LISTS, &second);
        assert_eq!(copy, second);
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
