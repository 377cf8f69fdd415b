//! What finished sockets, flows and records leave behind, kept for the next
//! ones: a daemon seeing the same kinds of connections over and over then
//! allocates nothing for them once warm. Lists grown by a long life are let
//! go, so what the spares hold stays small.
use tracer_protocol::{
    Side, Summary,
    marks::Mark,
    spare::{KEEP, Spares},
};

use crate::{
    connection::{App, Connection, StateAt},
    event::Segment,
    protocol::Tracker,
    state::TcpState,
};

/// Longer lists are freed, not kept.
const SHORT: usize = 16;

#[derive(Debug)]
pub struct Reuse {
    states: Spares<Vec<(TcpState, u64)>>,
    timelines: Spares<Vec<StateAt>>,
    segments: Spares<Vec<Segment>>,
    trackers: Spares<Box<Tracker>>,
    apps: Spares<Box<App>>,
}

impl Reuse {
    pub const fn new() -> Self {
        Self {
            states: Spares::new(KEEP),
            timelines: Spares::new(KEEP),
            segments: Spares::new(KEEP),
            trackers: Spares::new(KEEP),
            apps: Spares::new(KEEP),
        }
    }

    /// An empty list for a new socket's states.
    pub fn states(&mut self) -> Vec<(TcpState, u64)> {
        self.states.take().unwrap_or_else(|| Vec::with_capacity(6))
    }

    pub fn give_states(&mut self, states: Vec<(TcpState, u64)>) {
        self.states.give_list(states, SHORT);
    }

    /// An empty list for a record's timeline.
    pub fn timeline(&mut self) -> Vec<StateAt> {
        self.timelines.take().unwrap_or_default()
    }

    /// An empty list for a flow's (or a record's) segments.
    pub fn segments(&mut self) -> Vec<Segment> {
        self.segments.take().unwrap_or_default()
    }

    pub fn give_segments(&mut self, segments: Vec<Segment>) {
        self.segments.give_list(segments, SHORT);
    }

    /// A tracker for a new flow, in the box a finished flow's had.
    pub fn tracker(&mut self, t: Tracker) -> Box<Tracker> {
        self.trackers.boxed(t)
    }

    pub fn give_tracker(&mut self, mut t: Box<Tracker>) {
        // Its parsers hand their own lists on now, not when the box is next used.
        *t = Tracker::new(0, [None; 2]);
        self.trackers.give(t);
    }

    /// A record's protocol part, in the box (and mark list) a printed
    /// record's had.
    pub fn app(&mut self, summary: Summary, local: Side, marks: &[Mark]) -> Box<App> {
        let mut app = self.apps.take().unwrap_or_else(|| {
            Box::new(App {
                summary: Summary::default(),
                local,
                marks: Vec::new(),
            })
        });
        app.summary = summary;
        app.local = local;
        app.marks.extend_from_slice(marks);
        app
    }

    /// Takes back what a record holds, once printed.
    pub fn give_record(&mut self, c: Connection) {
        let Connection {
            states, segments, app, ..
        } = c;
        self.timelines.give_list(states, SHORT);
        self.segments.give_list(segments, SHORT);
        if let Some(mut app) = app {
            std::mem::take(&mut app.summary).recycle();
            app.marks.clear();
            if app.marks.capacity() > SHORT {
                app.marks = Vec::new();
            }
            self.apps.give(app);
        }
    }
}
