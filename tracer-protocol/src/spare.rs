//! Spare allocations kept for reuse: a daemon that sees the same kinds of
//! connections over and over then allocates nothing for them once warm.
//! Each list is bounded, so what an idle moment keeps is small.
use std::cell::RefCell;

/// Spares kept of each kind: more than the flows a busy host has alive at
/// once (a storm of 10,000 sockets a second keeps about 1,000 closing within
/// their 60 ms grace period; a daemon that falls behind, more), so that the
/// kind never runs dry in a burst. Each is small: a list of a few entries.
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

/// A copy of `items` in a spare list, if one is kept.
pub fn copy_of<T: Clone>(local: &'static Local<Vec<T>>, items: &[T]) -> Vec<T> {
    let mut list = take(local).unwrap_or_default();
    list.extend_from_slice(items);
    list
}

pub fn give_list<T>(local: &'static Local<Vec<T>>, list: Vec<T>, longest: usize) {
    let _ = local.try_with(|s| s.borrow_mut().give_list(list, longest));
}

#[cfg(test)]
mod tests {
    use super::*;

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
