//! `testserver`: the HTTP/1.1 echo server in the `berth-testserver` image, for tests and
//! examples. Single file, std only, built with `rustc` directly by `deploy/images/build.sh`.
//!
//! Endpoints: `GET /` (`hostname=... ip=... path=...`), `GET /healthz` (200 `ok`, or 500 with
//! `--fail-health` or while `/tmp/fail-health` exists), `GET /env`, `GET /exit?code=N`.
//! Flags (see `USAGE`) make it crash, exit, allocate or print on demand. It exits 0 on SIGTERM
//! and SIGINT even as PID 1, where the kernel would otherwise ignore them; with
//! `--drain-secs N` it first keeps serving for N seconds with `/healthz` failing, as a
//! well-behaved server does while its endpoint is taken out of rotation.

use std::collections::BTreeMap;
use std::env;
use std::ffi::{c_char, c_int};
use std::fs;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process;
use std::thread;
use std::time::Duration;

const USAGE: &str = "usage: testserver [--listen ADDR] [--fail-health] [--exit-code N]
       [--crash-after SECS] [--alloc-mb N] [--sleep] [--print LINE]...
  --listen ADDR       address to serve on (default 0.0.0.0:$PORT, PORT defaulting to 8080)
  --fail-health       /healthz answers 500 (as it does while /tmp/fail-health exists)
  --exit-code N       print a line and exit with N at once
  --crash-after SECS  exit 1 after SECS seconds
  --alloc-mb N        allocate and touch N MiB, hold it, then serve
  --sleep             do not serve: sleep until killed
  --print LINE        print LINE to stdout and to stderr (repeatable), then go on
  --drain-secs N      on SIGTERM, serve N more seconds (/healthz failing), then exit 0
       testserver --get http://HOST:PORT/PATH [--count N] [--interval-ms MS] [--udp]
  --get URL           be a client: GET the URL and print each body; HOST may be a name,
                      resolved through /etc/resolv.conf (nameserver, search, ndots) by a
                      DNS query of our own (a static binary cannot use glibc's resolver)
  --count N           requests to make (default 1); exit 1 when any failed
  --interval-ms MS    pause between requests (default 0)
";

const FAIL_HEALTH_FILE: &str = "/tmp/fail-health";

extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn gethostname(name: *mut c_char, len: usize) -> c_int;
    fn _exit(status: c_int) -> !;
}

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

/// Set by SIGTERM/SIGINT when `--drain-secs` is given.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static DRAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_signum: c_int) {
    if DRAIN.load(std::sync::atomic::Ordering::Relaxed) {
        // An atomic store is async-signal-safe; the drain thread does the rest.
        STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    // SAFETY: _exit is async-signal-safe; stdout is line-buffered, so nothing is left unflushed
    // that a line-oriented reader would miss.
    unsafe { _exit(0) }
}

#[derive(Default)]
struct Opts {
    listen: Option<String>,
    fail_health: bool,
    exit_code: Option<i32>,
    crash_after: Option<u64>,
    alloc_mb: Option<usize>,
    sleep: bool,
    print: Vec<String>,
    get: Option<String>,
    count: Option<u64>,
    interval_ms: Option<u64>,
    drain_secs: Option<u64>,
}

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts::default();
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))
        }
        match flag.as_str() {
            "--listen" => opts.listen = Some(value("--listen")?),
            "--fail-health" => opts.fail_health = true,
            "--exit-code" => opts.exit_code = Some(num(&flag, value(&flag)?)?),
            "--crash-after" => opts.crash_after = Some(num(&flag, value(&flag)?)?),
            "--alloc-mb" => opts.alloc_mb = Some(num(&flag, value(&flag)?)?),
            "--sleep" => opts.sleep = true,
            "--print" => opts.print.push(value(&flag)?),
            "--get" => opts.get = Some(value(&flag)?),
            "--count" => opts.count = Some(num(&flag, value(&flag)?)?),
            "--interval-ms" => opts.interval_ms = Some(num(&flag, value(&flag)?)?),
            "--drain-secs" => opts.drain_secs = Some(num(&flag, value(&flag)?)?),
            "-h" | "--help" => {
                print!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(err) => {
            eprint!("testserver: {err}\n{USAGE}");
            process::exit(2);
        }
    };
    if let Some(secs) = opts.drain_secs {
        DRAIN.store(true, std::sync::atomic::Ordering::Relaxed);
        thread::spawn(move || {
            while !STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            println!("testserver: draining for {secs}s");
            thread::sleep(Duration::from_secs(secs));
            process::exit(0);
        });
    }
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: on_stop only calls the async-signal-safe _exit and lives as long as the
        // process; glibc's signal keeps the handler installed.
        unsafe { signal(signum, on_stop) };
    }
    if let Some(url) = &opts.get {
        process::exit(client(url, opts.count.unwrap_or(1), opts.interval_ms.unwrap_or(0)));
    }
    for line in &opts.print {
        println!("{line}");
        eprintln!("{line}");
    }
    if let Some(code) = opts.exit_code {
        println!("testserver: exiting with code {code}");
        process::exit(code);
    }
    if let Some(secs) = opts.crash_after {
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(secs));
            eprintln!("testserver: crashing after {secs}s");
            process::exit(1);
        });
    }
    // Held until the process ends.
    let _held = opts.alloc_mb.map(|mb| {
        let mut block = vec![0u8; mb << 20];
        // Touch every page so the memory is resident, not just reserved.
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        println!("testserver: allocated {mb} MiB");
        black_box(block)
    });
    if opts.sleep {
        println!("testserver: sleeping");
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    let listen = opts.listen.clone().unwrap_or_else(|| {
        let port = env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
        format!("0.0.0.0:{port}")
    });
    let listener = match TcpListener::bind(&listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("testserver: listening on {listen}: {err}");
            process::exit(1);
        }
    };
    let local = listener.local_addr().map_or(listen, |a| a.to_string());
    println!("testserver: listening on {local}");
    let fail_health = opts.fail_health;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    let _ = serve(stream, fail_health);
                });
            }
            Err(err) => eprintln!("testserver: accept: {err}"),
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, fail_health: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let local = stream.local_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let mut keep_alive = version == "HTTP/1.1";
        let mut body_len = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    keep_alive = !value.eq_ignore_ascii_case("close")
                        && (keep_alive || value.eq_ignore_ascii_case("keep-alive"));
                }
            }
        }
        io::copy(&mut (&mut reader).take(body_len as u64), &mut io::sink())?;

        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut exit_code = None;
        let (status, body) = if method != "GET" && method != "HEAD" {
            ("405 Method Not Allowed", "method not allowed\n".to_owned())
        } else {
            match path {
                "/" => (
                    "200 OK",
                    format!("hostname={} ip={} path={path}\n", hostname(), pod_ip(local)),
                ),
                "/healthz"
                    if fail_health
                        || Path::new(FAIL_HEALTH_FILE).exists()
                        || STOPPING.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    ("500 Internal Server Error", "unhealthy\n".to_owned())
                }
                "/healthz" => ("200 OK", "ok".to_owned()),
                "/env" => {
                    let vars: BTreeMap<String, String> = env::vars().collect();
                    let body = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                    ("200 OK", body)
                }
                "/exit" => {
                    let code = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("code="))
                        .unwrap_or("0");
                    match code.parse::<i32>() {
                        Ok(code) => {
                            exit_code = Some(code);
                            ("200 OK", format!("exiting with code {code}\n"))
                        }
                        Err(_) => ("400 Bad Request", format!("bad code {code:?}\n")),
                    }
                }
                _ => ("404 Not Found", "not found\n".to_owned()),
            }
        };
        if exit_code.is_some() {
            keep_alive = false;
        }
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if method != "HEAD" {
            response.push_str(&body);
        }
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        if let Some(code) = exit_code {
            println!("testserver: exiting with code {code} (asked over HTTP)");
            let _ = writer.shutdown(std::net::Shutdown::Both);
            process::exit(code);
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which gethostname fills (truncating if
    // needed) and which outlives the call.
    let rc = unsafe { gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The pod's IP: the address this connection came in on, unless that is loopback (a client on
/// the same host), in which case the first non-loopback local IPv4 address of the network
/// namespace.
fn pod_ip(local: SocketAddr) -> IpAddr {
    let ip = match local.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if !ip.is_loopback() && !ip.is_unspecified() {
        return ip;
    }
    first_local_ipv4().map_or(ip, IpAddr::V4)
}

/// The first non-loopback address of this network namespace's local routing table in
/// `/proc/net/fib_trie`: a `|-- A.B.C.D` line followed by `/32 host LOCAL`.
fn first_local_ipv4() -> Option<Ipv4Addr> {
    let trie = fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(addr) = line.parse::<Ipv4Addr>() {
            last = Some(addr);
        } else if line == "/32 host LOCAL" {
            if let Some(addr) = last.filter(|a| !a.is_loopback()) {
                return Some(addr);
            }
        }
    }
    None
}

/// `--get`: GET `url` `count` times; prints each body (or the error) on a line of its own.
fn client(url: &str, count: u64, interval_ms: u64) -> i32 {
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("testserver: --get needs an http:// URL");
        return 2;
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(80)),
        None => (hostport, 80),
    };
    let mut failed = 0;
    for i in 0..count {
        if i > 0 && interval_ms > 0 {
            thread::sleep(Duration::from_millis(interval_ms));
        }
        let result = resolve(host)
            .map_err(|e| io::Error::new(e.kind(), format!("resolving {host}: {e}")))
            .and_then(|ip| {
                let addr = SocketAddr::new(ip, port);
                get(addr, host, path).map_err(|e| io::Error::new(e.kind(), format!("GET {addr}: {e}")))
            });
        match result {
            Ok(body) => println!("{}", body.trim_end()),
            Err(e) => {
                failed += 1;
                println!("error: {e}");
            }
        }
    }
    i32::from(failed > 0)
}

fn get(addr: SocketAddr, host: &str, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp.as_str(), ""));
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        return Err(io::Error::other(format!("{addr}: {status}")));
    }
    Ok(body.to_owned())
}

/// An IPv4 address for `host`: itself when numeric, else A queries to the first
/// nameserver of /etc/resolv.conf, through its search list as glibc would.
fn resolve(host: &str) -> io::Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let conf = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut server = None;
    let mut search: Vec<String> = Vec::new();
    let mut ndots = 1;
    for line in conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") if server.is_none() => server = words.next().and_then(|w| w.parse::<IpAddr>().ok()),
            Some("search") => search = words.map(str::to_owned).collect(),
            Some("options") => {
                for w in words {
                    if let Some(n) = w.strip_prefix("ndots:") {
                        ndots = n.parse().unwrap_or(1);
                    }
                }
            }
            _ => {}
        }
    }
    let server = server.ok_or_else(|| io::Error::other("no nameserver in /etc/resolv.conf"))?;
    let mut names: Vec<String> = Vec::new();
    let absolute = host.ends_with('.');
    let bare = host.trim_end_matches('.').to_owned();
    if absolute || host.matches('.').count() >= ndots {
        names.push(bare.clone());
    }
    if !absolute {
        names.extend(search.iter().map(|d| format!("{bare}.{d}")));
        if !names.contains(&bare) {
            names.push(bare.clone());
        }
    }
    for name in &names {
        if let Some(ip) = query_a(server, name)? {
            return Ok(IpAddr::V4(ip));
        }
    }
    Err(io::Error::other(format!("{host}: no such host")))
}

/// One A query over UDP; None for NXDOMAIN or no A record.
fn query_a(server: IpAddr, name: &str) -> io::Result<Option<Ipv4Addr>> {
    let id: u16 = (process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1500];
    // Sent again when no answer comes within 2 s, 3 times in all (a datagram may be lost),
    // as glibc's resolver tries more than once.
    let mut attempt = 0;
    let n = loop {
        attempt += 1;
        sock.send_to(&q, SocketAddr::new(server, 53))?;
        match sock.recv(&mut buf) {
            Ok(n) => break n,
            Err(e)
                if attempt < 3
                    && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    };
    let r = &buf[..n];
    if n < 12 || r[0..2] != id.to_be_bytes() {
        return Err(io::Error::other("bad DNS answer"));
    }
    if r[3] & 0x0f != 0 {
        return Ok(None); // NXDOMAIN, REFUSED, ...
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    // Skip the question: our own bytes after the header.
    let mut at = q.len();
    for _ in 0..answers {
        // The owner name: a pointer or labels.
        while at < n {
            let len = r[at] as usize;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        if at + 10 > n {
            break;
        }
        let kind = u16::from_be_bytes([r[at], r[at + 1]]);
        let rdlen = u16::from_be_bytes([r[at + 8], r[at + 9]]) as usize;
        at += 10;
        if kind == 1 && rdlen == 4 && at + 4 <= n {
            return Ok(Some(Ipv4Addr::new(r[at], r[at + 1], r[at + 2], r[at + 3])));
        }
        at += rdlen;
    }
    Ok(None)
}
