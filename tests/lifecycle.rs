//! End-to-end: connection records against the traffic the test made and a
//! packet capture of it, per socket and per direction.
mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{capture::Capture, *};
use serde_json::Value;

const ME: fn() -> u32 = std::process::id;

/// The client's and the server's record of one connection, checked against
/// what was sent and what the capture saw.
struct Expect<'a> {
    client: SocketAddr,
    port: u16,
    request_bytes: u64,
    response_bytes: u64,
    client_states: &'a [&'a str],
    server_states: &'a [&'a str],
    client_close: &'a str,
    server_close: &'a str,
}

fn check(records: &[Value], captured: &[common::capture::Captured], e: &Expect) {
    let cport = e.client.port();
    let c = connection(records, cport, e.port);
    let s = connection(records, e.port, cport);
    assert_eq!(c["role"], "client", "{c}");
    assert_eq!(s["role"], "server", "{s}");
    assert_eq!(timeline(c), e.client_states, "client timeline {c}");
    assert_eq!(timeline(s), e.server_states, "server timeline {s}");
    assert_eq!(c["close"], e.client_close, "{c}");
    assert_eq!(s["close"], e.server_close, "{s}");
    for (r, comm) in [(c, "e2e-client"), (s, "e2e-server")] {
        assert_eq!(r["pid"], ME(), "{r}");
        assert_eq!(r["comm"], comm, "{r}");
        assert!(r["handshake_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["duration_us"].as_f64().unwrap() >= r["handshake_us"].as_f64().unwrap(),
            "{r}"
        );
        assert_eq!(r["retransmits"], 0, "{r}");
        assert_eq!(r["protocol"], "http/1.1", "{r}");
    }
    assert_direction(c, "tx", captured, cport, e.port, e.request_bytes);
    assert_direction(c, "rx", captured, e.port, cport, e.response_bytes);
    assert_direction(s, "tx", captured, e.port, cport, e.response_bytes);
    assert_direction(s, "rx", captured, cport, e.port, e.request_bytes);
}

const ACTIVE_CLOSE: &[&str] = &["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"];
const PASSIVE_CLOSE: &[&str] = &["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"];
const REQ: u64 = REQUEST.len() as u64;
const RESP: u64 = RESPONSE.len() as u64;

/// Several requests on one connection; the client closes first.
fn keep_alive(listener: &TcpListener, to: SocketAddr, requests: usize) -> SocketAddr {
    let l = listener.try_clone().unwrap();
    let server = thread::Builder::new()
        .name("e2e-server".into())
        .spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for _ in 0..requests {
                let mut req = vec![0u8; REQUEST.len()];
                s.read_exact(&mut req).unwrap();
                s.write_all(RESPONSE).unwrap();
            }
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
        })
        .unwrap();
    let local = on_thread("e2e-client", move || {
        let mut s = TcpStream::connect(to).unwrap();
        for _ in 0..requests {
            s.write_all(REQUEST).unwrap();
            let mut resp = vec![0u8; RESPONSE.len()];
            s.read_exact(&mut resp).unwrap();
        }
        s.local_addr().unwrap()
    });
    server.join().unwrap();
    local
}

/// SO_LINGER 0: close() sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// A request and response, then the client aborts with a reset.
fn abort(listener: &TcpListener, to: SocketAddr) -> SocketAddr {
    let l = listener.try_clone().unwrap();
    let server = thread::Builder::new()
        .name("e2e-server".into())
        .spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; REQUEST.len()];
            s.read_exact(&mut req).unwrap();
            s.write_all(RESPONSE).unwrap();
            let mut rest = Vec::new();
            let err = s.read_to_end(&mut rest).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        })
        .unwrap();
    let local = on_thread("e2e-client", move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.write_all(REQUEST).unwrap();
        let mut resp = vec![0u8; RESPONSE.len()];
        s.read_exact(&mut resp).unwrap();
        set_linger_zero(&s);
        s.local_addr().unwrap()
    });
    server.join().unwrap();
    local
}

/// Every kind of ending, under one tracer and one capture.
fn endings(server_ip: IpAddr, netns: Option<&NetNs>, capture_iface: &str) {
    let (port, refused_port) = (free_port(), free_port());
    let tracer = Tracer::start(&["--port", &format!("{port},{refused_port}")]);
    let capture = Capture::start(capture_iface, &[port, refused_port], server_ip);
    let listener = listen(SocketAddr::new(server_ip, port), netns);
    let to = SocketAddr::new(server_ip, port);
    let client_first = exchange(&listener, to, Closer::Client);
    let server_first = exchange(&listener, to, Closer::Server);
    let kept_alive = keep_alive(&listener, to, 3);
    let aborted = abort(&listener, to);
    on_thread("e2e-client", move || {
        let err = TcpStream::connect(SocketAddr::new(server_ip, refused_port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
    drop(listener);
    let captured = capture.stop();
    let records = tracer.stop();

    let base = Expect {
        client: client_first,
        port,
        request_bytes: REQ,
        response_bytes: RESP,
        client_states: ACTIVE_CLOSE,
        server_states: PASSIVE_CLOSE,
        client_close: "local_fin",
        server_close: "remote_fin",
    };
    check(&records, &captured, &base);
    check(
        &records,
        &captured,
        &Expect {
            client: server_first,
            client_states: PASSIVE_CLOSE_CLIENT,
            server_states: ACTIVE_CLOSE_SERVER,
            client_close: "remote_fin",
            server_close: "local_fin",
            ..base
        },
    );
    check(
        &records,
        &captured,
        &Expect {
            client: kept_alive,
            request_bytes: 3 * REQ,
            response_bytes: 3 * RESP,
            ..base
        },
    );
    check(
        &records,
        &captured,
        &Expect {
            client: aborted,
            client_states: &["SYN_SENT", "ESTABLISHED", "CLOSE"],
            server_states: &["SYN_RECV", "ESTABLISHED", "CLOSE"],
            client_close: "local_rst",
            server_close: "remote_rst",
            ..base
        },
    );
    let refused: Vec<&Value> = of_type(&records, "connection")
        .into_iter()
        .filter(|r| r["rport"] == refused_port)
        .collect();
    assert_eq!(refused.len(), 1, "one socket, the client's");
    let r = refused[0];
    assert_eq!(
        (r["role"].as_str(), r["close"].as_str()),
        (Some("client"), Some("refused"))
    );
    assert_eq!(timeline(r), ["SYN_SENT", "CLOSE"]);
    assert_eq!(r["handshake_us"], Value::Null);
    let lport = r["lport"].as_u64().unwrap() as u16;
    assert_direction(r, "tx", &captured, lport, refused_port, 0);
    assert_direction(r, "rx", &captured, refused_port, lport, 0);
    assert_eq!(r["flags"]["rx"]["RST"], 1);

    // Four connections make eight sockets, plus the refused client.
    assert_eq!(of_type(&records, "connection").len(), 9);
    let s = summary(&records);
    assert_eq!(s["connections"], 9);
    assert_eq!((s["dropped"].as_u64(), s["evicted"].as_u64()), (Some(0), Some(0)));
    assert_eq!(
        (s["missed_state_changes"].as_u64(), s["missed_retransmits"].as_u64()),
        (Some(0), Some(0))
    );
}

const PASSIVE_CLOSE_CLIENT: &[&str] = &["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"];
const ACTIVE_CLOSE_SERVER: &[&str] = &["SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"];

#[test]
fn endings_on_loopback_ipv4() {
    endings("127.0.0.1".parse().unwrap(), None, "lo");
}

#[test]
fn endings_on_loopback_ipv6() {
    endings("::1".parse().unwrap(), None, "lo");
}

#[test]
fn endings_across_namespaces_ipv4() {
    let ns = NetNs::new();
    endings(ns.ns_v4.parse().unwrap(), Some(&ns), &ns.host_iface.clone());
}

#[test]
fn endings_across_namespaces_ipv6() {
    let ns = NetNs::new();
    endings(ns.ns_v6.parse().unwrap(), Some(&ns), &ns.host_iface.clone());
}

/// This test binary, run again as a separate server process named
/// `e2e-httpd`: it answers each request on `port` and closes first.
fn spawn_server_process(port: u16, connections: usize) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("E2E_SERVE", format!("{port}:{connections}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // It prints "listening" once its socket is bound; the rest of its output
    // is drained so that it never writes to a closed pipe.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "server process died"
        );
    }
    thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// Not a test: the body of `spawn_server_process`.
#[test]
#[ignore]
fn server_process() {
    let Ok(spec) = std::env::var("E2E_SERVE") else { return };
    let (port, n) = spec.split_once(':').unwrap();
    // The process's name (its main thread's, which /proc shows) and this
    // thread's, which the kernel reports for what this thread does.
    std::fs::write("/proc/self/comm", "e2e-httpd").unwrap();
    let name = std::ffi::CString::new("e2e-httpd").unwrap();
    // SAFETY: a valid NUL-terminated name for the calling thread.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let l = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    println!("listening");
    for _ in 0..n.parse::<usize>().unwrap() {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        // No Content-Length: the body ends with the connection, so curl
        // reads until this side's FIN and this side always closes first
        // (with a length, curl could close as soon as it had the body).
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok").unwrap();
    }
}

fn curl(port: u16) -> u32 {
    let child = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/")])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    pid
}

#[test]
fn a_server_that_closes_first_is_attributed_to_itself() {
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let mut server = spawn_server_process(port, 1);
    let curl_pid = curl(port);
    assert!(server.wait().unwrap().success());
    let records = tracer.stop();
    let conns = of_type(&records, "connection");
    assert_eq!(conns.len(), 2, "{conns:?}");
    let s = conns.iter().find(|r| r["role"] == "server").unwrap();
    let c = conns.iter().find(|r| r["role"] == "client").unwrap();
    // The server's close runs in its own process; its last ACK arrives in
    // softirq on whatever task runs: neither may steal the socket.
    assert_eq!(
        (s["pid"].as_u64(), s["comm"].as_str()),
        (Some(server.id().into()), Some("e2e-httpd"))
    );
    assert_eq!(
        (c["pid"].as_u64(), c["comm"].as_str()),
        (Some(curl_pid.into()), Some("curl"))
    );
    assert_eq!(s["close"], "local_fin");
    assert_eq!(c["close"], "remote_fin");
    assert_eq!(timeline(s), ACTIVE_CLOSE_SERVER);
}

/// `--pid` and `--comm` of a server that was listening before the tracer
/// started: the sockets it accepts afterwards are its own, the clients' and
/// other processes' are not.
#[test]
fn pid_and_comm_filters_follow_sockets_accepted_later() {
    for by_comm in [false, true] {
        let port = free_port();
        let mut server = spawn_server_process(port, 2);
        let filter = if by_comm {
            ["--comm".to_string(), "e2e-httpd".to_string()]
        } else {
            ["--pid".to_string(), server.id().to_string()]
        };
        let tracer = Tracer::start(&[filter[0].as_str(), filter[1].as_str()]);
        let other = listen("127.0.0.1:0".parse().unwrap(), None);
        exchange(&other, other.local_addr().unwrap(), Closer::Client);
        curl(port);
        curl(port);
        assert!(server.wait().unwrap().success());
        let records = tracer.stop();
        let conns = of_type(&records, "connection");
        assert_eq!(conns.len(), 2, "only the server's two accepted sockets: {conns:?}");
        for c in conns {
            assert_eq!(c["role"], "server");
            assert_eq!(c["pid"], server.id());
            assert_eq!(c["comm"], "e2e-httpd");
            assert_eq!(c["lport"], port);
            assert_eq!(timeline(c), ACTIVE_CLOSE_SERVER);
        }
    }
}

#[test]
fn a_100_mib_transfer_is_counted_exactly_and_costs_the_ring_little() {
    const TOTAL: usize = 100 << 20;
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut sink = Vec::with_capacity(TOTAL);
        s.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    let client = on_thread("e2e-client", move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..100 {
            s.write_all(&chunk).unwrap();
        }
        // The server's FIN acknowledges every byte: nothing is sent after
        // the kernel's count is read.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
        (s.local_addr().unwrap(), bytes_sent(&s))
    });
    assert_eq!(server.join().unwrap(), TOTAL);
    let (client, (sent, resent)) = client;
    let records = tracer.stop();
    let c = connection(&records, client.port(), port);
    let s = connection(&records, port, client.port());
    // Segments on the wire: loopback reorders segments when a sender moves
    // between CPUs, and the fast retransmissions that follow are sent again.
    assert_eq!(sent, TOTAL as u64 + resent);
    assert_eq!(c["bytes"]["tx"], sent);
    assert_eq!(c["bytes"]["rx"], 0);
    assert_eq!(s["bytes"]["rx"], sent);
    assert_eq!(c["packets"]["tx"], s["packets"]["rx"]);
    assert_eq!(c["packets"]["rx"], s["packets"]["tx"]);
    // Two sockets of 2 KiB each at most, plus the capture window: the payload
    // heads each CPU ships on its own (16, of up to 2 KiB and a segment
    // record each) before userspace, seeing no protocol, stops them.
    let ring = summary(&records)["ring_bytes"].as_u64().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let capture_window = cpus * 16 * (8 + 88 + 2048);
    assert!(
        ring <= 2 * 2048 + capture_window,
        "{ring} bytes crossed the ring buffer"
    );
}

#[test]
fn sockets_still_open_at_exit_are_reported_with_their_counters() {
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let mut client = on_thread("e2e-client", move || TcpStream::connect(("127.0.0.1", port)).unwrap());
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(REQUEST).unwrap();
    let mut req = vec![0u8; REQUEST.len()];
    accepted.read_exact(&mut req).unwrap();
    thread::sleep(Duration::from_millis(50));
    let records = tracer.stop();
    let lport = client.local_addr().unwrap().port();
    let c = connection(&records, lport, port);
    let s = connection(&records, port, lport);
    for r in [c, s] {
        assert_eq!(r["close"], "open_at_exit", "{r}");
        assert_eq!(timeline(r).last(), Some(&"ESTABLISHED"));
    }
    assert_eq!(c["bytes"]["tx"], REQ);
    assert_eq!(s["bytes"]["rx"], REQ);
}

/// Keeps the calling thread on CPU 0: the kernel's LRU flow table hands its
/// free entries out per CPU, and a tiny table evicts predictably only when
/// every flow is opened from one CPU.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0);
}

/// Two connections pushed out of a tiny kernel flow table by newer ones, one
/// closed with FINs and one aborted: their records say their counters are
/// unknown (null, not zero), the states and the shipped reset still say how
/// each ended, and the summary counts every such record.
#[test]
fn a_flow_the_kernel_table_lost_has_unknown_counters_and_is_counted() {
    pin_to_cpu0();
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string(), "--max-flows", "8"]);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let open = || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut a, _) = listener.accept().unwrap();
        c.write_all(REQUEST).unwrap();
        // Read, so that the server's close is a FIN and not a reset.
        a.read_exact(&mut vec![0u8; REQUEST.len()]).unwrap();
        (c, a)
    };
    let (idle, idle_accepted) = open();
    let (aborted, aborted_accepted) = open();
    for _ in 0..200 {
        drop(open());
    }
    let ports = |c: &TcpStream| c.local_addr().unwrap().port();
    let (idle_port, aborted_port) = (ports(&idle), ports(&aborted));
    drop(idle);
    drop(idle_accepted);
    set_linger_zero(&aborted);
    drop(aborted);
    drop(aborted_accepted);
    thread::sleep(Duration::from_millis(200));
    let records = tracer.stop();
    let record = |lport, rport| connection(&records, lport, rport);
    let cases = [
        (record(idle_port, port), "local_fin", "TIME_WAIT"),
        (record(port, idle_port), "remote_fin", "CLOSE"),
        (record(aborted_port, port), "local_rst", "CLOSE"),
        (record(port, aborted_port), "remote_rst", "CLOSE"),
    ];
    for (r, close, last) in cases {
        for field in ["packets", "bytes", "flags", "retransmits"] {
            assert!(r[field].is_null(), "{field} of {r}");
        }
        assert_eq!(
            (r["close"].as_str(), timeline(r).last().copied()),
            (Some(close), Some(last)),
            "{r}"
        );
    }
    let connections = of_type(&records, "connection");
    let unknown = connections.iter().filter(|c| c["packets"].is_null()).count() as u64;
    let s = summary(&records);
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(
        connections.len() as u64 + s["unfinished_sockets"].as_u64().unwrap(),
        2 * 202
    );
    assert_eq!(s["uncounted_sockets"], unknown);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn over_the_socket_cap_the_oldest_are_evicted_counted_and_memory_stays_flat() {
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string(), "--max-sockets", "16"]);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let round = || {
        let clients: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let accepted: Vec<TcpStream> = (0..100).map(|_| listener.accept().unwrap().0).collect();
        thread::sleep(Duration::from_millis(50));
        drop(clients);
        drop(accepted);
        thread::sleep(Duration::from_millis(150));
    };
    for _ in 0..3 {
        round();
    }
    let settled = rss_kib(tracer.pid());
    for _ in 0..10 {
        round();
    }
    let after = rss_kib(tracer.pid());
    let records = tracer.stop();
    let s = summary(&records);
    // 200 sockets a round, 16 tracked at once.
    assert!(s["evicted"].as_u64().unwrap() >= 13 * (200 - 16), "{s}");
    assert!(
        after <= settled + 1024,
        "resident memory grew from {settled} KiB to {after} KiB"
    );
}

/// Both ends shut down at once, released by a barrier on two CPUs: when the
/// FINs cross, each socket goes FIN_WAIT1 -> CLOSING, and each closed first.
/// The race is won by some attempts only; the first that did is checked.
#[test]
fn a_simultaneous_close_ends_local_fin_on_both_sides() {
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let capture = Capture::start("lo", &[port], "127.0.0.1".parse().unwrap());
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        clients.push(client.local_addr().unwrap());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let shut = |s: TcpStream| {
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s
            })
        };
        let (a, b) = (shut(client), shut(server));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        thread::sleep(Duration::from_millis(2));
        drop((a, b));
    }
    drop(listener);
    let captured = capture.stop();
    let records = tracer.stop();
    let crossed = clients.iter().find(|c| {
        timeline(connection(&records, c.port(), port)).contains(&"CLOSING")
            && timeline(connection(&records, port, c.port())).contains(&"CLOSING")
    });
    let client = crossed.expect("no attempt closed simultaneously");
    let c = connection(&records, client.port(), port);
    let s = connection(&records, port, client.port());
    assert_eq!(
        timeline(c),
        ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "TIME_WAIT"]
    );
    assert_eq!(
        timeline(s),
        ["SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "TIME_WAIT"]
    );
    for r in [c, s] {
        assert_eq!(r["close"], "local_fin", "{r}");
        assert_eq!(r["flags"]["tx"]["FIN"], 1, "{r}");
        assert_eq!(r["flags"]["rx"]["FIN"], 1, "{r}");
    }
    assert_direction(c, "tx", &captured, client.port(), port, 0);
    assert_direction(c, "rx", &captured, port, client.port(), 0);
    assert_direction(s, "tx", &captured, port, client.port(), 0);
    assert_direction(s, "rx", &captured, client.port(), port, 0);
}

#[test]
fn local_and_remote_port_filters_pick_one_side() {
    let port = free_port();
    for (flag, role) in [("-L", "server"), ("-D", "client")] {
        let tracer = Tracer::start(&[flag, &port.to_string()]);
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
        exchange(&listener, listener.local_addr().unwrap(), Closer::Client);
        drop(listener);
        let records = tracer.stop();
        let conns = of_type(&records, "connection");
        assert_eq!(conns.len(), 1, "{flag}: {conns:?}");
        assert_eq!(conns[0]["role"], role, "{flag}");
        assert_eq!(conns[0][if role == "server" { "lport" } else { "rport" }], port);
    }
}

#[test]
fn diagrams_draw_every_segment_of_a_real_exchange() {
    let port = free_port();
    let mut tracer = Command::new(TRACER)
        .args(["--diagram", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("tracing TCP connections"), "{line}");
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    let client = exchange(&listener, listener.local_addr().unwrap(), Closer::Client);
    thread::sleep(Duration::from_millis(150));
    signal(tracer.id(), libc::SIGINT);
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let title = format!("connection 127.0.0.1:{} <-> 127.0.0.1:{port}: client", client.port());
    let start = text
        .find(&title)
        .unwrap_or_else(|| panic!("no diagram {title} in\n{text}"));
    let ladder: Vec<&str> = text[start..].lines().take_while(|l| !l.is_empty()).collect();
    let arrows: Vec<&str> = ladder
        .iter()
        .filter(|l| l.contains("|-- ") || l.contains("|<- "))
        .copied()
        .collect();
    let expect = [
        "|-- SYN seq=0 ",
        "|<- SYN,ACK seq=0 ack=1 ",
        "|-- ACK seq=1 ack=1 ",
        &format!("|-- PSH,ACK seq=1 ack=1 len={} ", REQUEST.len()),
    ];
    for (arrow, want) in arrows.iter().zip(expect) {
        assert!(
            arrow.contains(want),
            "{arrow:?} should show {want:?}\n{}",
            ladder.join("\n")
        );
    }
    assert!(arrows.iter().any(|a| a.contains(&format!(
        "<- PSH,ACK seq=1 ack={} len={}",
        REQUEST.len() + 1,
        RESPONSE.len()
    ))));
    assert!(arrows.iter().any(|a| a.contains("|-- FIN,ACK")));
    assert!(arrows.iter().any(|a| a.contains("|<- FIN,ACK")));
    for state in ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"] {
        assert!(
            ladder.iter().any(|l| l.contains(&format!("  {state} "))),
            "{state} missing\n{}",
            ladder.join("\n")
        );
    }
}

#[test]
fn an_unknown_interface_is_an_error() {
    let out = Command::new(TRACER).args(["--iface", "nosuch0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim(), "tracer: unknown interface nosuch0");
}

#[test]
fn family_filters_keep_one_family() {
    for (flag, family) in [("-4", "ipv4"), ("-6", "ipv6")] {
        let port = free_port();
        let tracer = Tracer::start(&[flag, "--port", &port.to_string()]);
        for ip in ["127.0.0.1", "::1"] {
            let listener = listen(SocketAddr::new(ip.parse().unwrap(), port), None);
            exchange(&listener, listener.local_addr().unwrap(), Closer::Client);
        }
        let records = tracer.stop();
        let conns = of_type(&records, "connection");
        assert_eq!(conns.len(), 2, "{flag}: {conns:?}");
        assert!(conns.iter().all(|c| c["family"] == family), "{flag}: {conns:?}");
    }
}

/// Total retransmissions of a socket, by the kernel's own count (TCP_INFO).
fn total_retrans(s: &TcpStream) -> u32 {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket, and an out buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    info.tcpi_total_retrans
}

/// Payload bytes a socket sent, retransmissions included, and those it
/// retransmitted, by the kernel's own count (TCP_INFO's `tcpi_bytes_sent` and
/// `tcpi_bytes_retrans`, at offsets 200 and 208 since Linux 4.19; the libc
/// crate's glibc `tcp_info` stops before them).
fn bytes_sent(s: &TcpStream) -> (u64, u64) {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: a valid socket, and an out buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    assert!(len >= 216, "TCP_INFO of {len} bytes has no byte counts");
    let at = |off: usize| u64::from_ne_bytes(info[off..off + 8].try_into().unwrap());
    (at(200), at(208))
}

/// The server's address vanishes while the client sends: its packets are
/// dropped, the kernel retransmits until the address is back, and the record
/// counts what the kernel counted.
#[test]
fn retransmissions_are_counted_as_the_kernel_counts_them() {
    let (c, records, retrans) = request_through_a_lull(|_, client| {
        client.write_all(REQUEST).unwrap();
        thread::sleep(Duration::from_millis(900));
    });
    assert!(retrans > 0, "the kernel retransmitted nothing");
    assert_eq!(c["retransmits"], retrans, "{c}\n{}", summary(&records));
    assert_eq!(c["bytes"]["tx"].as_u64().unwrap() % REQUEST.len() as u64, 0, "{c}");
}

/// The retransmit hook also runs for attempts the kernel abandons unsent and
/// does not count: here the request itself still waits in the host's queue (a
/// token bucket run dry) when its timer fires. The record says what the
/// kernel says, not how often the hook ran.
#[test]
fn retransmissions_the_kernel_abandons_are_not_counted() {
    let abandoned_before = host_queue_retransmits();
    let (c, records, retrans) = request_through_a_lull(|ns, client| {
        let qdisc = |op: &str, kind: &[&str]| {
            let mut args = vec!["qdisc", op, "dev", &ns.host_iface, "root"];
            args.extend_from_slice(kind);
            assert!(Command::new("tc").args(&args).status().unwrap().success());
        };
        // 150 bytes of tokens, refilled at a byte a second: one datagram
        // leaves 8, too few for the request's segment.
        qdisc("add", &["tbf", "rate", "8bit", "burst", "150", "limit", "10000"]);
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(&[0u8; 100], (ns.ns_v4.as_str(), 9)).unwrap();
        client.write_all(REQUEST).unwrap();
        thread::sleep(Duration::from_millis(1200));
        qdisc("del", &[]);
    });
    assert!(
        host_queue_retransmits() > abandoned_before,
        "no attempt found its segment queued"
    );
    assert_eq!(c["retransmits"], retrans, "{c}\n{}", summary(&records));
}

/// With the server's address gone, `send` writes from the client; then the
/// address comes back and the server reads the request. The client's
/// record, all records, and the kernel's retransmission count.
fn request_through_a_lull(send: impl FnOnce(&NetNs, &mut TcpStream)) -> (Value, Vec<Value>, u32) {
    let ns = NetNs::new();
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let to = SocketAddr::new(ns.ns_v4.parse().unwrap(), port);
    let listener = listen(to, Some(&ns));
    let mut client = TcpStream::connect(to).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let peer = format!("trp{}", ns.host_iface.trim_start_matches("trh"));
    let addr = format!("{}/24", ns.ns_v4);
    let address = |op: &str| {
        let st = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip", "addr", op, &addr, "dev", &peer])
            .status();
        assert!(st.unwrap().success());
    };
    address("del");
    send(&ns, &mut client);
    address("add");
    let mut req = vec![0u8; REQUEST.len()];
    server.read_exact(&mut req).unwrap();
    let retrans = total_retrans(&client);
    let lport = client.local_addr().unwrap().port();
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    drop(server);
    let records = tracer.stop();
    (connection(&records, lport, port).clone(), records, retrans)
}

/// The host's count of retransmission attempts abandoned because the
/// segment was still in a host queue (`TcpExt: TCPSpuriousRtxHostQueues`).
fn host_queue_retransmits() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names.split(' ').position(|n| n == "TCPSpuriousRtxHostQueues").unwrap();
    values.split(' ').nth(at).unwrap().parse().unwrap()
}

/// A client socket bound to a fixed local port before connecting (libc: std
/// cannot bind a TcpStream).
fn connect_from(local_port: u16, to: SocketAddr) -> TcpStream {
    try_connect_from(local_port, to).unwrap()
}

/// As `connect_from`, with the connect's failure (a refusal) returned.
fn try_connect_from(local_port: u16, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh fd with correctly sized arguments.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4);
        let sin = |port: u16, ip: [u8; 4]| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        };
        let local = sin(local_port, [127, 0, 0, 1]);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
        let remote = sin(to.port(), to.ip().octets());
        let stream = TcpStream::from_raw_fd(fd);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A port reused at once after an abort, towards a server that has gone:
/// the refusal's reset comes within the aborted connection's grace period,
/// yet it belongs to the new connection, not to the old one's late traffic.
#[test]
fn a_port_reused_within_the_grace_period_keeps_its_traffic_apart() {
    let port = free_port();
    let local = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let to = listener.local_addr().unwrap();
    let mut c = connect_from(local, to);
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(REQUEST).unwrap();
    s.read_exact(&mut vec![0u8; REQUEST.len()]).unwrap();
    drop(listener);
    set_linger_zero(&c);
    drop(c);
    assert!(s.read(&mut [0u8; 1]).is_err(), "the server socket sees the reset");
    drop(s);
    let refused = try_connect_from(local, to).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
    let records = tracer.stop();
    let sockets: Vec<&Value> = of_type(&records, "connection")
        .into_iter()
        .filter(|r| r["lport"] == local || r["rport"] == local)
        .collect();
    let by = |lport: u16, close: &str| {
        let found: Vec<_> = sockets
            .iter()
            .filter(|r| r["lport"] == lport && r["close"] == close)
            .collect();
        assert_eq!(found.len(), 1, "one {close} socket on port {lport}: {sockets:?}");
        *found[0]
    };
    let (aborted, peer, next) = (by(local, "local_rst"), by(port, "remote_rst"), by(local, "refused"));
    assert_eq!(sockets.len(), 3, "{sockets:?}");
    let resets = |r: &Value| (r["flags"]["tx"]["RST"].clone(), r["flags"]["rx"]["RST"].clone());
    assert_eq!(resets(aborted), (1.into(), 0.into()), "{aborted}");
    assert_eq!(resets(peer), (0.into(), 1.into()), "{peer}");
    assert_eq!(resets(next), (0.into(), 1.into()), "{next}");
    assert_eq!(aborted["bytes"]["tx"], REQ, "{aborted}");
    assert_eq!(peer["bytes"]["rx"], REQ, "{peer}");
}

/// The same 4-tuple twice (the server closes first, so its TIME_WAIT lets the
/// client reuse its port): the second connection's counters start afresh.
#[test]
fn a_reused_four_tuple_starts_its_counters_afresh() {
    let port = free_port();
    let local = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for _ in 0..2 {
        let mut c = connect_from(local, listener.local_addr().unwrap());
        let (mut s, _) = listener.accept().unwrap();
        c.write_all(REQUEST).unwrap();
        let mut req = vec![0u8; REQUEST.len()];
        s.read_exact(&mut req).unwrap();
        s.write_all(RESPONSE).unwrap();
        drop(s);
        c.read_to_end(&mut Vec::new()).unwrap();
        drop(c);
        thread::sleep(Duration::from_millis(150));
    }
    let records = tracer.stop();
    let clients: Vec<&Value> = of_type(&records, "connection")
        .into_iter()
        .filter(|r| r["lport"] == local)
        .collect();
    assert_eq!(clients.len(), 2, "{clients:?}");
    for c in &clients {
        assert_eq!(c["bytes"]["tx"], REQ, "{c}");
        assert_eq!(c["bytes"]["rx"], RESP, "{c}");
        assert_eq!(c["flags"]["tx"]["SYN"], 1, "{c}");
        assert_eq!(c["flags"]["rx"]["FIN"], 1, "{c}");
    }
    assert_eq!(clients[0]["packets"], clients[1]["packets"]);
}

/// A dual-stack server socket talks IPv4 to an IPv4 client: `-4` keeps it,
/// with the traffic its IPv4 packets carried.
#[test]
fn a_dual_stack_socket_counts_as_the_family_of_its_traffic() {
    let port = free_port();
    let tracer = Tracer::start(&["-4", "--port", &port.to_string()]);
    let listener = listen(SocketAddr::new("::".parse().unwrap(), port), None);
    let client = exchange(&listener, SocketAddr::from(([127, 0, 0, 1], port)), Closer::Client);
    let records = tracer.stop();
    let s = connection(&records, port, client.port());
    assert_eq!(s["family"], "ipv6", "{s}");
    assert_eq!(s["raddr"], "::ffff:127.0.0.1", "{s}");
    assert_eq!(s["bytes"]["rx"], REQ, "{s}");
    assert_eq!(s["bytes"]["tx"], RESP, "{s}");
}

const SCHED_OTHER: &str = "0";
const SCHED_IDLE: &str = "5";

/// The scheduling policy of a process's main thread (/proc/PID/stat, field 41).
fn policy(pid: u32) -> String {
    try_policy(pid).expect("the tracer's /proc/PID/stat")
}

fn try_policy(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = &stat[stat.rfind(')')? + 2..];
    Some(fields.split_whitespace().nth(41 - 3)?.to_string())
}

/// Waits up to `secs` for the main thread of `pid` to be at `want`.
fn wait_for_policy(pid: u32, want: &str, secs: u64) {
    let start = Instant::now();
    while policy(pid) != want {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "policy not {want} after {secs} s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A thread per CPU spinning at the normal policy, until dropped (a failed
/// assertion included: the tests after it need the CPUs).
struct Hogs {
    busy: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Hogs {
    fn start() -> Hogs {
        let busy = Arc::new(AtomicBool::new(true));
        let cpus = thread::available_parallelism().unwrap().get();
        let threads = (0..cpus)
            .map(|_| {
                let busy = busy.clone();
                thread::spawn(move || {
                    while busy.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs { busy, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Relaxed);
        self.threads.drain(..).for_each(|t| t.join().unwrap());
    }
}

/// The daemon drains at SCHED_IDLE, below the traced service's threads,
/// while events come, and at the normal policy while none do (its drains are
/// then rare and short, and it cannot starve). With every CPU kept busy at
/// the normal policy it falls behind, and its watchdog moves it back to the
/// normal policy until it keeps up: more connections than the ring buffer
/// holds at once are all reported, none dropped.
#[test]
fn the_daemon_yields_the_cpu_yet_keeps_up_on_a_saturated_host() {
    // Long enough for the daemon, whose tick stretched while nothing came,
    // to be seen busy before the CPU hogs start; shorter than the watchdog's
    // sleep through a quiet spell, so it is the end of the spell that wakes it.
    const CALM: Duration = Duration::from_millis(600);
    // About 1.7 KB of ring buffer each: 6.8 MB against the default 4 MiB.
    const SATURATED: usize = 4000;
    let port = free_port();
    let tracer = Tracer::start(&["--port", &port.to_string()]);
    let pid = tracer.pid();
    wait_for_policy(pid, SCHED_OTHER, 5);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)), None);
    // Serves until a connection closes without a request: the last one.
    let server = thread::spawn(move || {
        loop {
            let (mut s, _) = listener.accept().unwrap();
            if s.read_exact(&mut [0u8; REQUEST.len()]).is_err() {
                return;
            }
            s.write_all(RESPONSE).unwrap();
        }
    });
    let exchange = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(REQUEST).unwrap();
        s.read_to_end(&mut Vec::new()).unwrap();
    };
    let mut made = 0;
    let calm = policies_while(pid, || {
        let start = Instant::now();
        while start.elapsed() < CALM {
            exchange();
            made += 1;
        }
    });
    // Sampled from before the hogs start: the daemon at SCHED_IDLE first.
    let saturated = policies_while(pid, || {
        let hogs = Hogs::start();
        (0..SATURATED).for_each(|_| exchange());
        drop(hogs);
    });
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    server.join().unwrap();
    let records = tracer.stop();
    let sum = summary(&records);
    let connections = made + SATURATED + 1;
    assert_eq!(sum["dropped"], 0, "{sum}");
    assert_eq!(sum["connections"], 2 * connections, "{sum}");
    assert_eq!(of_type(&records, "connection").len(), 2 * connections);
    assert!(
        calm.iter().any(|p| p == SCHED_IDLE),
        "never yielded while busy: {calm:?}"
    );
    let promoted = saturated
        .iter()
        .skip_while(|p| *p != SCHED_IDLE)
        .any(|p| p == SCHED_OTHER);
    assert!(promoted, "never left SCHED_IDLE while starved: {saturated:?}");
}

/// The policy of `pid`'s main thread every 5 ms while `f` runs.
fn policies_while(pid: u32, f: impl FnOnce()) -> Vec<String> {
    let running = Arc::new(AtomicBool::new(true));
    let watching = running.clone();
    let watcher = thread::spawn(move || {
        let mut seen = Vec::new();
        // A tracer that died leaves nothing to read: the test's own checks say why.
        while watching.load(Ordering::Relaxed)
            && let Some(p) = try_policy(pid)
        {
            seen.push(p);
            thread::sleep(Duration::from_millis(5));
        }
        seen
    });
    // Cleared on the way out, a failed `f` included: the watcher must not outlive the test.
    let stop = ClearOnDrop(running);
    f();
    drop(stop);
    watcher.join().unwrap()
}

struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
