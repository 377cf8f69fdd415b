//! End-to-end: the real tracer against real sockets, asserting the exact
//! transitions the kernel reports for each socket.
mod common;

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Command, Stdio},
};

use common::*;

const CLIENT_CLOSES_FIRST_CLIENT: &[&str] = &[
    "CLOSE->SYN_SENT",
    "SYN_SENT->ESTABLISHED",
    "ESTABLISHED->FIN_WAIT1",
    "FIN_WAIT1->FIN_WAIT2",
    // A socket hands over to a timewait socket from FIN_WAIT2: the kernel
    // reports CLOSE, never TIME_WAIT, for the original socket.
    "FIN_WAIT2->CLOSE",
];
const CLIENT_CLOSES_FIRST_SERVER: &[&str] = &[
    "LISTEN->SYN_RECV",
    "SYN_RECV->ESTABLISHED",
    "ESTABLISHED->CLOSE_WAIT",
    "CLOSE_WAIT->LAST_ACK",
    "LAST_ACK->CLOSE",
];

/// Traces one client-first and one server-first exchange and a refused
/// connect between `client` and `server` addresses, and checks every socket.
fn scenario(server_ip: IpAddr, netns: Option<&NetNs>) {
    let port = free_port();
    let refused_port = free_port();
    let tracer = Tracer::start(&["--events", "--port", &format!("{port},{refused_port}")]);
    let listener = listen(SocketAddr::new(server_ip, port), netns);
    let to = SocketAddr::new(server_ip, port);
    let first = exchange(&listener, to, Closer::Client);
    let second = exchange(&listener, to, Closer::Server);
    on_thread("e2e-client", move || {
        let err = TcpStream::connect(SocketAddr::new(server_ip, refused_port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
    drop(listener);
    let records = tracer.stop();

    assert_eq!(transitions(&records, first.port(), port), CLIENT_CLOSES_FIRST_CLIENT);
    assert_eq!(transitions(&records, port, first.port()), CLIENT_CLOSES_FIRST_SERVER);
    assert_eq!(
        transitions(&records, second.port(), port),
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE"
        ]
    );
    assert_eq!(
        transitions(&records, port, second.port()),
        [
            "LISTEN->SYN_RECV",
            "SYN_RECV->ESTABLISHED",
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE"
        ]
    );
    let refused: Vec<_> = of_type(&records, "state")
        .into_iter()
        .filter(|r| r["rport"] == refused_port)
        .map(|r| format!("{}->{}", r["old"].as_str().unwrap(), r["new"].as_str().unwrap()))
        .collect();
    assert_eq!(refused, ["CLOSE->SYN_SENT", "SYN_SENT->CLOSE"]);
    assert_eq!(transitions(&records, port, 0), ["CLOSE->LISTEN", "LISTEN->CLOSE"]);

    let family = if server_ip.is_ipv4() { "ipv4" } else { "ipv6" };
    for r in of_type(&records, "state") {
        assert_eq!(r["family"], family);
        assert_eq!(r["pid"], std::process::id(), "every socket here is this test's: {r}");
        if r["lport"] == first.port() || r["lport"] == second.port() {
            assert_eq!(r["comm"], "e2e-client", "{r}");
            assert_eq!(r["laddr"], first.ip().to_string());
            assert_eq!(r["raddr"], server_ip.to_string());
        }
        if r["lport"] == port {
            assert_eq!(r["comm"], "e2e-server", "{r}");
        }
    }
    let states = of_type(&records, "state").len() as u64;
    assert_eq!(states, 5 * 4 + 2 + 2);
    // Every record read is printed once in --events mode: a state or a packet.
    let s = summary(&records);
    assert_eq!(s["events"], states + of_type(&records, "packet").len() as u64);
    assert_eq!(s["dropped"], 0);
}

#[test]
fn loopback_ipv4() {
    scenario("127.0.0.1".parse().unwrap(), None);
}

#[test]
fn loopback_ipv6() {
    scenario("::1".parse().unwrap(), None);
}

#[test]
fn across_namespaces_ipv4() {
    let ns = NetNs::new();
    scenario(ns.ns_v4.parse().unwrap(), Some(&ns));
}

#[test]
fn across_namespaces_ipv6() {
    let ns = NetNs::new();
    scenario(ns.ns_v6.parse().unwrap(), Some(&ns));
}

#[test]
fn port_filter_excludes_other_ports() {
    let (traced, other) = (free_port(), free_port());
    let tracer = Tracer::start(&["--events", "--port", &traced.to_string()]);
    for port in [traced, other] {
        let l = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
        exchange(&l, l.local_addr().unwrap(), Closer::Client);
    }
    let records = tracer.stop();
    let states = of_type(&records, "state");
    assert_eq!(states.len(), 12, "listener 2 + two sockets x 5");
    for r in states {
        assert!(r["lport"] == traced || r["rport"] == traced, "untraced port in {r}");
    }
    let packets = of_type(&records, "packet");
    assert!(!packets.is_empty());
    for p in packets {
        assert!(p["sport"] == traced || p["dport"] == traced, "untraced port in {p}");
    }
    for c in of_type(&records, "connection") {
        assert!(c["lport"] == traced || c["rport"] == traced, "untraced port in {c}");
    }
}

#[test]
fn pid_filter_keeps_only_that_process_sockets() {
    let listener = listen("127.0.0.1:0".parse().unwrap(), None);
    let port = listener.local_addr().unwrap().port();
    // `exec` keeps the pid: the shell waits for a line, then becomes curl.
    let mut curl = Command::new("sh")
        .args([
            "-c",
            &format!("read _; exec curl -s -o /dev/null http://127.0.0.1:{port}/"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let tracer = Tracer::start(&["--events", "--pid", &curl.id().to_string()]);
    // Traffic of this process on the same port must not appear.
    let mine = exchange(&listener, listener.local_addr().unwrap(), Closer::Client);
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).unwrap();
        // curl closes first once it has the whole (empty) response.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    curl.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(curl.wait().unwrap().success());
    server.join().unwrap();
    let records = tracer.stop();
    let states = of_type(&records, "state");
    assert!(!states.is_empty());
    for r in &states {
        assert_eq!(r["pid"], curl.id(), "{r}");
        assert_eq!(r["comm"], "curl", "{r}");
        assert_ne!(r["lport"], mine.port());
        assert_eq!(r["rport"], port, "only curl's own socket: {r}");
    }
    let lport = states[1]["lport"].as_u64().unwrap() as u16;
    assert_eq!(transitions(&records, lport, port), CLIENT_CLOSES_FIRST_CLIENT);
    assert_eq!(states.len(), CLIENT_CLOSES_FIRST_CLIENT.len());
}

#[test]
fn a_full_ring_buffer_counts_every_lost_event() {
    let port = free_port();
    // The smallest ring (one page), and the tracer stopped while 100
    // connections come and go: the ring fills, and every event is either
    // printed once the tracer runs again or counted as dropped. The classifier
    // sits on an interface this traffic never crosses, so the kernel ships
    // exactly one record per transition.
    let quiet = NetNs::new();
    let host_side = quiet.host_iface.clone();
    let tracer = Tracer::start(&[
        "--events",
        "--port",
        &port.to_string(),
        "--ring-bytes",
        "4096",
        "--iface",
        &host_side,
    ]);
    signal(tracer.pid(), libc::SIGSTOP);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let to = listener.local_addr().unwrap();
    let conns: Vec<_> = (0..100).map(|_| TcpStream::connect(to).unwrap()).collect();
    let accepted: Vec<_> = (0..100).map(|_| listener.accept().unwrap().0).collect();
    drop(conns);
    drop(accepted);
    drop(listener);
    signal(tracer.pid(), libc::SIGCONT);
    let records = tracer.stop();
    let s = summary(&records);
    let printed = of_type(&records, "state").len() as u64;
    let dropped = s["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "a one-page ring should overflow");
    assert_eq!(of_type(&records, "packet").len(), 0);
    assert_eq!(s["events"], printed);
    // 100 x (client 5 + server 5) transitions, plus the listener's two.
    assert_eq!(printed + dropped, 100 * 10 + 2);
}

#[test]
fn nothing_stays_attached_after_sigint_or_sigkill() {
    for how in ["SIGINT", "SIGKILL"] {
        let tracer = Tracer::start(&["--port", "9"]);
        assert!(
            loaded_programs().contains("inet_sock_set_s"),
            "not attached while running"
        );
        if how == "SIGINT" {
            let records = tracer.stop();
            assert_eq!(summary(&records)["events"], 0);
        } else {
            tracer.kill();
        }
        // The kernel releases programs once the last fd and link are gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while OUR_PROGRAMS.iter().any(|p| loaded_programs().contains(p)) || tcx_links("lo") > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "still loaded or attached after {how}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn run_tracer(args: &[&str]) -> std::process::Output {
    Command::new(TRACER).args(args).output().unwrap()
}

#[test]
fn bad_input_is_one_line_and_a_nonzero_exit() {
    for (args, code, says) in [
        (&["--port", "0"][..], 2, "invalid value '0'"),
        (&["--port", "70000"], 2, "invalid value '70000'"),
        (&["--frobnicate"], 2, "unexpected argument"),
        (&["--pid", "999999999"], 1, "no process with pid 999999999"),
    ] {
        let out = run_tracer(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    }
}

#[test]
fn without_privileges_it_names_what_is_missing() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            TRACER,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
        "{err}"
    );
}

/// A fresh host has tracefs unmounted; the tracer's hooks are BTF
/// tracepoints, which do not need it.
#[test]
fn a_host_without_tracefs_is_traced() {
    let mounted = || std::path::Path::new("/sys/kernel/tracing/events").is_dir();
    let was_mounted = mounted();
    if was_mounted {
        let st = Command::new("umount").arg("/sys/kernel/tracing").status().unwrap();
        assert!(st.success(), "cannot unmount tracefs for the test");
    }
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let listener = listen(SocketAddr::new("127.0.0.1".parse().unwrap(), port), None);
    exchange(&listener, listener.local_addr().unwrap(), Closer::Client);
    let records = tracer.stop();
    let still_unmounted = !mounted();
    if was_mounted {
        let st = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount tracefs back");
    }
    assert!(still_unmounted, "the tracer mounted tracefs");
    let roles: Vec<_> = of_type(&records, "connection")
        .iter()
        .map(|c| c["role"].clone())
        .collect();
    assert_eq!(roles.len(), 2, "{records:?}");
    assert!(
        roles.contains(&"client".into()) && roles.contains(&"server".into()),
        "{roles:?}"
    );
}
