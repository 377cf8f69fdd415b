//! Embeds the kernel object built by `cargo xtask build-ebpf`, so the `tracer`
//! binary alone runs on a host.
use std::{env, fs, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let object = env::var_os("TRACER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/ebpf/bpfel-unknown-none/release/tracer-ebpf"));
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("tracer-ebpf");
    if let Err(e) = fs::copy(&object, &out) {
        eprintln!(
            "error: cannot read the eBPF object {} ({e}): run `cargo xtask build-ebpf` first",
            object.display()
        );
        std::process::exit(1);
    }
}
