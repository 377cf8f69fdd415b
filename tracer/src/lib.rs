//! tracer: the life of every TCP connection, traced from inside the kernel.
//!
//! A pipeline of stages, one module each: `loader` (load and attach the kernel
//! programs), `reader` (drain the ring buffer), `decode` (bytes to events),
//! `output` (text or JSON). `app` wires them together; `demo` is the built-in tour.
pub mod app;
pub mod btf;
pub mod cli;
pub mod clock;
pub mod connection;
pub mod correlate;
pub mod decode;
pub mod demo;
pub mod event;
pub mod iface;
pub mod loader;
pub mod misses;
pub mod output;
pub mod preflight;
pub mod priority;
pub mod procfs;
pub mod reader;
pub mod state;

/// Protocol detection lives in its own crate, which the fuzz targets build alone.
pub use tracer_protocol as protocol;
