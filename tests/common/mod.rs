//! Harness for the end-to-end tests: the real `tracer` binary, real sockets,
//! network namespaces that are removed even when a test fails.
#![allow(dead_code)] // each test file uses its own part of the harness

pub mod capture;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::Value;

pub const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// A running tracer; killed on drop if the test did not stop it.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Tracer {
    /// Starts `tracer --json ARGS` and waits until its programs are attached.
    pub fn start(args: &[&str]) -> Tracer {
        let mut child = Command::new(TRACER)
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).expect("read tracer's stderr") == 0 {
                let _ = child.kill();
                panic!("tracer did not start: {seen}");
            }
            if line.contains("tracing TCP connections") {
                break;
            }
            eprint!("{line}");
            seen.push_str(&line);
        }
        thread::spawn(move || std::io::copy(&mut err, &mut std::io::stderr()));
        let (lines, reader) = collect_lines(child.stdout.take().unwrap());
        Tracer {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, wait for a clean exit, and every JSON record it printed.
    pub fn stop(mut self) -> Vec<Value> {
        // Let the kernel finish what the last step started (the last ACKs,
        // state changes in softirq): the daemon reads all of it at exit.
        thread::sleep(Duration::from_millis(100));
        signal(self.child.id(), libc::SIGINT);
        let status = self.child.wait().expect("wait for tracer");
        assert!(status.success(), "tracer exited with {status}");
        self.reader.take().unwrap().join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    pub fn kill(mut self) {
        signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line `out` prints, gathered by a thread as they come.
pub fn collect_lines(out: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we own.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Records of one `type`.
pub fn of_type<'a>(records: &'a [Value], ty: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == ty).collect()
}

/// The summary record, which must be the last line.
pub fn summary(records: &[Value]) -> &Value {
    let last = records.last().expect("no output");
    assert_eq!(last["type"], "summary", "last record is not the summary");
    last
}

/// `OLD->NEW` of each transition in the life of the socket whose local and
/// remote ports are `lport` and `rport`. A socket is reported before it has a
/// port (CLOSE -> SYN_SENT) and its address is reused after CLOSE, so its life
/// is the run of records with its `sock` that ends at its CLOSE.
pub fn transitions(records: &[Value], lport: u16, rport: u16) -> Vec<String> {
    let states = of_type(records, "state");
    let Some(hit) = states.iter().position(|r| r["lport"] == lport && r["rport"] == rport) else {
        return Vec::new();
    };
    let sock = &states[hit]["sock"];
    let mine: Vec<&&Value> = states.iter().filter(|r| &r["sock"] == sock).collect();
    let at = mine.iter().position(|r| std::ptr::eq(**r, states[hit])).unwrap();
    let start = mine[..at]
        .iter()
        .rposition(|r| r["new"] == "CLOSE")
        .map_or(0, |i| i + 1);
    let end = mine[at..]
        .iter()
        .position(|r| r["new"] == "CLOSE")
        .map_or(mine.len(), |i| at + i + 1);
    mine[start..end]
        .iter()
        .map(|r| format!("{}->{}", r["old"].as_str().unwrap(), r["new"].as_str().unwrap()))
        .collect()
}

/// Runs `f` on a thread named `name` (the kernel's comm for it) and waits.
pub fn on_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// A server that answers one request per connection and then closes, or
/// waits for the client to close first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Closer {
    Client,
    Server,
}

pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// One exchange: connect from a thread named `e2e-client`, request, response,
/// close in the given order. Returns the client's local address.
pub fn exchange(listener: &TcpListener, to: SocketAddr, closer: Closer) -> SocketAddr {
    let l = listener.try_clone().unwrap();
    let server = thread::Builder::new()
        .name("e2e-server".into())
        .spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; REQUEST.len()];
            s.read_exact(&mut req).unwrap();
            s.write_all(RESPONSE).unwrap();
            if closer == Closer::Client {
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
            }
        })
        .unwrap();
    let local = on_thread("e2e-client", move || {
        let mut s = TcpStream::connect(to).unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(REQUEST).unwrap();
        let mut resp = vec![0u8; RESPONSE.len()];
        s.read_exact(&mut resp).unwrap();
        if closer == Closer::Server {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
        }
        local
    });
    server.join().unwrap();
    local
}

/// A listener created on a thread named `e2e-server`, in `netns` if given.
pub fn listen(addr: SocketAddr, netns: Option<&NetNs>) -> TcpListener {
    let ns = netns.map(|n| n.name.clone());
    on_thread("e2e-server", move || {
        if let Some(ns) = ns {
            enter_netns(&ns);
        }
        TcpListener::bind(addr).unwrap()
    })
}

/// A port that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A network namespace joined to the host by a veth pair:
/// host side 10.199.N.1 / fd00:199:N::1, namespace side .2 / ::2.
/// Dropping it deletes the namespace, and with it the veth pair.
pub struct NetNs {
    pub name: String,
    /// The veth end in the host's namespace.
    pub host_iface: String,
    pub host_v4: String,
    pub ns_v4: String,
    pub host_v6: String,
    pub ns_v6: String,
}

static NEXT_NS: AtomicU32 = AtomicU32::new(1);

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl NetNs {
    // Addresses are added with `nodad`, so they are usable at once.
    pub fn new() -> NetNs {
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed) + std::process::id() % 200;
        let name = format!("tracer-e2e-{}-{n}", std::process::id());
        let (host, peer) = (format!("trh{n}"), format!("trp{n}"));
        let _ = Command::new("ip")
            .args(["link", "del", &host])
            .stderr(Stdio::null())
            .status();
        let ns = NetNs {
            name: name.clone(),
            host_iface: host.clone(),
            host_v4: format!("10.199.{n}.1"),
            ns_v4: format!("10.199.{n}.2"),
            host_v6: format!("fd00:199:{n}::1"),
            ns_v6: format!("fd00:199:{n}::2"),
        };
        ip(&["netns", "add", &name]);
        // From here on, Drop removes the namespace even if a step below fails.
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{}/24", ns.host_v4), "dev", &host]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", ns.host_v6),
            "dev",
            &host,
            "nodad",
        ]);
        ip(&["link", "set", &host, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", ns.ns_v4), "dev", &peer]);
        inside(&["-6", "addr", "add", &format!("{}/64", ns.ns_v6), "dev", &peer, "nodad"]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Moves the calling thread into network namespace `name`.
pub fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace fd; setns affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// The tracer's programs as `bpftool` names them (the kernel keeps 15 bytes).
pub const OUR_PROGRAMS: [&str; 4] = ["inet_sock_set_s", "tcp_retransmit_", "tc_ingress", "tc_egress"];

/// The tracer's classifiers attached to an interface through TCX, ingress and
/// egress, by the kernel's own account.
pub fn tcx_links(iface: &str) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .flat_map(|t| SchedClassifier::query_tcx(iface, t).expect("query TCX").1)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("tc_")))
        .count()
}

/// Names of BPF programs loaded right now, by the kernel's own account.
pub fn loaded_programs() -> String {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool prog show failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This test process's comm for a thread name (the kernel keeps 15 bytes).
pub fn comm(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// Connection records, by the local and remote port of their socket.
pub fn connection(records: &[Value], lport: u16, rport: u16) -> &Value {
    of_type(records, "connection")
        .into_iter()
        .find(|r| r["lport"] == lport && r["rport"] == rport)
        .unwrap_or_else(|| panic!("no connection record {lport} -> {rport}"))
}

/// The state names of a connection record's timeline.
pub fn timeline(conn: &Value) -> Vec<&str> {
    conn["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect()
}

/// Asserts that a connection record's direction (`tx` or `rx`) matches the
/// captured segments from `from` to `to`, and carried `bytes` of payload.
pub fn assert_direction(conn: &Value, dir: &str, captured: &[capture::Captured], from: u16, to: u16, bytes: u64) {
    let (packets, cap_bytes, flags) = capture::direction(captured, from, to);
    assert_eq!(
        cap_bytes, bytes,
        "capture {from}->{to} carried {cap_bytes} bytes, the test sent {bytes}"
    );
    assert_eq!(conn["bytes"][dir], bytes, "{dir} bytes of {conn}");
    assert_eq!(conn["packets"][dir], packets, "{dir} packets of {conn}");
    for (i, name) in ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"]
        .iter()
        .enumerate()
    {
        assert_eq!(conn["flags"][dir][name], flags[i], "{dir} {name} count of {conn}");
    }
}

/// The `peers` binary (real servers and clients for protocol tests), which
/// `cargo build -p peers` puts next to the tracer's binary.
pub fn peers_path() -> std::path::PathBuf {
    let path = std::path::Path::new(TRACER).parent().unwrap().join("peers");
    assert!(
        path.exists(),
        "{} is missing: build it with the tracer's profile (`cargo build --release -p peers`)",
        path.display()
    );
    path
}

/// A `peers` server, in `netns` if given; killed on drop.
pub struct PeerServer {
    child: Child,
    /// The port it listens on, from its `ready <port>` line.
    pub port: u16,
}

impl PeerServer {
    /// Starts `peers ARGS` and waits for its `ready <port>` line.
    pub fn start(args: &[&str], netns: Option<&NetNs>) -> PeerServer {
        let mut cmd = match netns {
            // `ip netns exec` execs the program itself: the child is the server.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(peers_path());
                c
            }
            None => Command::new(peers_path()),
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start peers");
        let out = child.stdout.take().unwrap();
        let mut server = PeerServer { child, port: 0 };
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let _ = tx.send(lines.next());
            // Drained, so that the server never writes to a closed pipe.
            lines.for_each(drop);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(Ok(line))) => line,
            other => panic!("peers {args:?} did not start: {other:?}"),
        };
        server.port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("peers {args:?} said {line:?}, not `ready <port>`"));
        server
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end, within `secs` seconds, and returns its stdout.
/// Panics with its output if it fails; kills it if it hangs.
pub fn run_to_end(cmd: &mut Command, secs: u64) -> String {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (out, out_reader) = collect_lines(child.stdout.take().unwrap());
    let (err, err_reader) = collect_lines(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let out = out.lock().unwrap().join("\n");
    let err = err.lock().unwrap().join("\n");
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("{what} exited with {s}\nstdout:\n{out}\nstderr:\n{err}"),
        None => panic!("{what} still ran after {secs} s\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

/// Runs the client `peers ARGS` to its end; its stdout.
pub fn run_peer(args: &[&str]) -> String {
    run_to_end(Command::new(peers_path()).args(args), 20)
}
