//! `sybench`: the small tools the proxy benchmark (`bench/run`) needs and
//! Debian does not package.
//!
//! - `load`: an open-loop load generator at a fixed offered rate (HTTP/1.1,
//!   h2c, gRPC unary). A pacer thread stamps every request with the time it
//!   *should* start; latency runs from that stamp to the end of the response
//!   (body and trailers), so a stalled proxy shows up in the percentiles
//!   instead of silently lowering the offered load (coordinated omission).
//! - `grpc-backend`: an h2c gRPC unary echo server (any path; the request
//!   message is echoed with `grpc-status: 0` in the trailers).
//! - `tcp-sink` / `tcp-bulk`: bulk TCP throughput, sink and source.
//! - `idle`: opens N connections, sends one request on each, and holds them.
//!
//! Everything runs on a single-threaded runtime: the harness pins this process
//! to the load-generator core.

use std::{
    cell::RefCell,
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::LocalSet,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let opts = Opts::parse(&args[1..]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = LocalSet::new();
    let result = match cmd.as_str() {
        "load" => local.block_on(&rt, load(opts)),
        "grpc-backend" => local.block_on(&rt, grpc_backend(opts)),
        "tcp-sink" => local.block_on(&rt, tcp_sink(opts)),
        "tcp-bulk" => local.block_on(&rt, tcp_bulk(opts)),
        "idle" => local.block_on(&rt, idle(opts)),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("sybench {cmd}: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage:
  sybench load --addr IP:PORT [--path /] [--proto h1|h2|grpc] [--conns 64] [--rate 10000]
               [--duration 10] [--close] [--streams 100] [--grpc-payload 32] [--out FILE]
               [--key-header NAME --keys N]  (h1: NAME takes N values, spread over the connections)
  sybench grpc-backend --listen IP:PORT
  sybench tcp-sink --listen IP:PORT
  sybench tcp-bulk --addr IP:PORT [--conns 4] [--duration 5] [--out FILE]
  sybench idle --addr IP:PORT [--conns 10000] [--concurrency 200] [--hold 30] [--path /] [--no-request]"
    );
    std::process::exit(2)
}

/// `--key value` and `--flag` options.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                usage()
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap().clone(),
                _ => "true".to_owned(),
            };
            map.insert(key.to_owned(), value);
        }
        Self(map)
    }
    fn str(&self, k: &str, default: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| default.to_owned())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        match self.0.get(k) {
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{k}: not a number: {v}");
                std::process::exit(2)
            }),
            None => default,
        }
    }
    fn flag(&self, k: &str) -> bool {
        self.0.get(k).is_some_and(|v| v == "true")
    }
    fn addr(&self, k: &str) -> SocketAddr {
        let v = self.str(k, "");
        v.parse().unwrap_or_else(|_| {
            eprintln!("--{k}: expected IP:PORT, got {v:?}");
            std::process::exit(2)
        })
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Finer sleeps for the pacer: the default 50 µs timer slack would delay
/// every paced request by up to that much.
fn fine_timer_slack() {
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

// ---------------------------------------------------------------------------
// load

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    H1,
    H2,
    Grpc,
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

struct Recorder {
    hist: Histogram<u64>,
    stats: Stats,
}

impl Recorder {
    fn ok(&mut self, intended: Instant) {
        let ns = intended.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.hist.saturating_record(ns.max(1));
        self.stats.ok += 1;
    }
    fn err(&mut self, e: impl std::fmt::Display) {
        self.stats.errors += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some(e.to_string());
        }
    }
}

type Rec = Rc<RefCell<Recorder>>;

async fn load(o: Opts) -> Res<()> {
    let addr = o.addr("addr");
    let path = o.str("path", "/");
    let proto = match o.str("proto", "h1").as_str() {
        "h1" => Proto::H1,
        "h2" => Proto::H2,
        "grpc" => Proto::Grpc,
        p => return Err(format!("unknown --proto {p}").into()),
    };
    let conns: usize = o.num("conns", 64);
    let rate: f64 = o.num("rate", 10_000.0);
    let duration = Duration::from_secs_f64(o.num("duration", 10.0));
    let close = o.flag("close");
    let streams: usize = o.num("streams", 100);
    let payload: usize = o.num("grpc-payload", 32);
    let out = o.str("out", "");
    // For hash balancers: each connection cycles through its share of
    // `keys` values of a header, built once.
    let key_header = o.str("key-header", "");
    let keys: usize = o.num("keys", 0);
    if conns == 0 || rate <= 0.0 {
        return Err("--conns and --rate must be positive".into());
    }

    let rec: Rec = Rc::new(RefCell::new(Recorder {
        hist: Histogram::new_with_bounds(1, 120_000_000_000, 3)?,
        stats: Stats::default(),
    }));

    let mut senders = Vec::with_capacity(conns);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let rec = rec.clone();
        let c = senders.len() - 1;
        let task = match proto {
            Proto::H1 => {
                let variants: Vec<String> = if key_header.is_empty() || keys == 0 {
                    vec![String::new()]
                } else {
                    (c..keys)
                        .step_by(conns)
                        .map(|k| format!("{key_header}: {k}\r\n"))
                        .collect()
                };
                let reqs = variants
                    .iter()
                    .map(|extra| {
                        Bytes::from(format!(
                            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sybench\r\n{extra}{}\r\n",
                            if close { "Connection: close\r\n" } else { "" }
                        ))
                    })
                    .collect();
                tokio::task::spawn_local(h1_conn(addr, reqs, rx, close, rec))
            }
            Proto::H2 | Proto::Grpc => {
                let body = (proto == Proto::Grpc).then(|| grpc_frame(payload));
                let uri: http::Uri = format!("http://{addr}{path}").parse()?;
                tokio::task::spawn_local(h2_conn(addr, uri, body, streams, rx, rec))
            }
        };
        tasks.push(task);
    }
    // Connections are opened lazily by the first request for HTTP/1.1; give
    // h2 handshakes a moment before the clock starts.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let pacer = std::thread::spawn(move || {
        fine_timer_slack();
        let mut i: u64 = 0;
        let n = senders.len() as u64;
        loop {
            let t = start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
            if t >= end {
                break;
            }
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
            // Everything due by now goes out in one batch; each request
            // carries its own intended start.
            let now = Instant::now();
            loop {
                let t = start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
                if t > now || t >= end {
                    break;
                }
                let _ = senders[(i % n) as usize].send(t);
                i += 1;
            }
        }
        i
    });
    // Wait for the pacer without blocking the runtime.
    while !pacer.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = pacer.join().map_err(|_| "pacer panicked")?;
    // Responses still in flight get up to five seconds; what is left then is
    // reported as lost.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_deadline {
        let done = {
            let r = rec.borrow();
            r.stats.ok + r.stats.errors
        };
        if done >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        t.abort();
    }
    let r = rec.borrow();
    let lost = sent.saturating_sub(r.stats.ok + r.stats.errors);
    let h = &r.hist;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut pcts = String::new();
    for (i, q) in [
        0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            pcts.push(',');
        }
        pcts.push_str(&format!("[{},{:.1}]", q * 100.0, us(*q)));
    }
    let json = format!(
        "{{\"tool\":\"sybench\",\"mode\":\"rate\",\"offered_rps\":{rate},\"sent\":{sent},\"requests\":{},\"errors\":{},\"lost\":{lost},\"duration_s\":{:.3},\"rps\":{:.1},\"mean_us\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"percentiles\":[{pcts}],\"first_error\":{}}}",
        r.stats.ok,
        r.stats.errors,
        duration.as_secs_f64(),
        r.stats.ok as f64 / duration.as_secs_f64(),
        h.mean() / 1000.0,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(1.0),
        match &r.stats.first_error {
            Some(e) => format!("{:?}", e),
            None => "null".to_owned(),
        },
    );
    if out.is_empty() {
        println!("{json}");
    } else {
        std::fs::File::create(&out)?.write_all(json.as_bytes())?;
    }
    Ok(())
}

/// One gRPC message frame: uncompressed flag, length, and a protobuf
/// message holding one bytes field (field 1) of `payload` bytes.
fn grpc_frame(payload: usize) -> Bytes {
    let mut msg = vec![0x0a];
    let mut n = payload;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            msg.push(b);
            break;
        }
        msg.push(b | 0x80);
    }
    msg.extend(std::iter::repeat_n(b'x', payload));
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    Bytes::from(frame)
}

async fn h1_conn(
    addr: SocketAddr,
    reqs: Vec<Bytes>,
    mut rx: mpsc::UnboundedReceiver<Instant>,
    close: bool,
    rec: Rec,
) {
    let mut stream: Option<TcpStream> = None;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut next = reqs.iter().cycle();
    while let Some(t) = rx.recv().await {
        let req = next.next().expect("at least one request");
        if stream.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    rec.borrow_mut().err(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let s = stream.as_mut().unwrap();
        buf.clear();
        match h1_exchange(s, req, &mut buf).await {
            Ok((status, keep)) => {
                if (200..300).contains(&status) {
                    rec.borrow_mut().ok(t);
                } else {
                    rec.borrow_mut().err(format!("status {status}"));
                }
                if close || !keep {
                    stream = None;
                }
            }
            Err(e) => {
                rec.borrow_mut().err(e);
                stream = None;
            }
        }
    }
}

/// Writes one request and reads one whole response; returns the status and
/// whether the connection may be reused.
async fn h1_exchange(s: &mut TcpStream, req: &[u8], buf: &mut BytesMut) -> Res<(u16, bool)> {
    s.write_all(req).await?;
    let (status, head_len, body, keep) = loop {
        if s.read_buf(buf).await? == 0 {
            return Err("connection closed before the response head".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf)? {
            let mut body = BodyLen::UntilClose;
            let mut keep = resp.version == Some(1);
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body = BodyLen::Fixed(std::str::from_utf8(h.value)?.trim().parse()?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                    && h.value.eq_ignore_ascii_case(b"chunked")
                {
                    body = BodyLen::Chunked;
                } else if h.name.eq_ignore_ascii_case("connection") {
                    keep = !h.value.eq_ignore_ascii_case(b"close");
                }
            }
            break (resp.code.unwrap_or(0), n, body, keep);
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
    };
    match body {
        BodyLen::Fixed(n) => {
            while buf.len() < head_len + n {
                if s.read_buf(buf).await? == 0 {
                    return Err("connection closed in the response body".into());
                }
            }
            Ok((status, keep))
        }
        BodyLen::Chunked => loop {
            if chunked_done(&buf[head_len..])? {
                return Ok((status, keep));
            }
            if s.read_buf(buf).await? == 0 {
                return Err("connection closed in a chunked body".into());
            }
        },
        BodyLen::UntilClose => {
            while s.read_buf(buf).await? != 0 {}
            Ok((status, false))
        }
    }
}

enum BodyLen {
    Fixed(usize),
    Chunked,
    UntilClose,
}

/// True once `data` holds a complete chunked body (trailers included).
fn chunked_done(mut data: &[u8]) -> Res<bool> {
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(false);
        };
        let line = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let mut rest = data;
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(false);
                };
                if eol == 0 {
                    return Ok(true);
                }
                rest = &rest[eol + 2..];
            }
        }
        if data.len() < size + 2 {
            return Ok(false);
        }
        data = &data[size + 2..];
    }
}

async fn h2_conn(
    addr: SocketAddr,
    uri: http::Uri,
    body: Option<Bytes>,
    streams: usize,
    mut rx: mpsc::UnboundedReceiver<Instant>,
    rec: Rec,
) {
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake::<_, Bytes>(tcp)
            .await?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok::<_, Box<dyn std::error::Error>>(client)
    }
    .await;
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            rec.borrow_mut().err(format!("h2 connect: {e}"));
            while rx.recv().await.is_some() {
                rec.borrow_mut().stats.errors += 1;
            }
            return;
        }
    };
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(streams));
    while let Some(t) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let uri = uri.clone();
        let body = body.clone();
        let rec = rec.clone();
        tokio::task::spawn_local(async move {
            match h2_exchange(client, uri, body).await {
                Ok(()) => rec.borrow_mut().ok(t),
                Err(e) => rec.borrow_mut().err(e),
            }
            drop(permit);
        });
    }
}

async fn h2_exchange(
    client: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    body: Option<Bytes>,
) -> Res<()> {
    let mut client = client.ready().await?;
    let mut req = http::Request::builder().uri(uri);
    if body.is_some() {
        req = req
            .method("POST")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    let req = req.body(())?;
    let (resp, mut send) = client.send_request(req, body.is_none())?;
    let grpc = body.is_some();
    if let Some(b) = body {
        send.send_data(b, true)?;
    }
    let resp = resp.await?;
    let status = resp.status();
    let grpc_in_head = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec());
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?;
    if !status.is_success() {
        return Err(format!("status {status}").into());
    }
    if grpc {
        let code = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec())
            .or(grpc_in_head);
        if code.as_deref() != Some(b"0") {
            return Err(format!(
                "grpc-status {:?}",
                code.map(|c| String::from_utf8_lossy(&c).into_owned())
            )
            .into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// grpc-backend

async fn grpc_backend(o: Opts) -> Res<()> {
    let listener = TcpListener::bind(o.addr("listen")).await?;
    eprintln!("grpc-backend listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .max_concurrent_streams(1000)
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 24)
                .handshake::<_, Bytes>(tcp)
                .await
            else {
                return;
            };
            while let Some(next) = conn.accept().await {
                match next {
                    Ok((req, respond)) => {
                        tokio::task::spawn_local(async move {
                            let _ = grpc_echo(req, respond).await;
                        });
                    }
                    Err(e) => {
                        eprintln!("grpc-backend: connection error: {e}");
                        break;
                    }
                }
            }
        });
    }
}

async fn grpc_echo(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Res<()> {
    let mut body = req.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())?;
    let mut send = respond.send_response(resp, false)?;
    if !data.is_empty() {
        send.send_data(data.freeze(), false)?;
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// tcp-sink / tcp-bulk

async fn tcp_sink(o: Opts) -> Res<()> {
    let listener = TcpListener::bind(o.addr("listen")).await?;
    eprintln!("tcp-sink listening on {}", listener.local_addr()?);
    loop {
        let (mut tcp, _) = listener.accept().await?;
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

async fn tcp_bulk(o: Opts) -> Res<()> {
    let addr = o.addr("addr");
    let conns: usize = o.num("conns", 4);
    let duration = Duration::from_secs_f64(o.num("duration", 5.0));
    let out = o.str("out", "");
    let total = Rc::new(RefCell::new(0u64));
    let mut streams = Vec::new();
    for _ in 0..conns {
        streams.push(TcpStream::connect(addr).await?);
    }
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for mut s in streams {
        let total = total.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let buf = vec![0x5au8; 128 * 1024];
            while Instant::now() < end {
                match s.write(&buf).await {
                    Ok(n) => *total.borrow_mut() += n as u64,
                    Err(_) => break,
                }
            }
            let _ = s.shutdown().await;
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = *total.borrow();
    let json = format!(
        "{{\"tool\":\"sybench\",\"mode\":\"tcp\",\"conns\":{conns},\"bytes\":{bytes},\"duration_s\":{secs:.3},\"mib_per_s\":{:.1},\"gbit_per_s\":{:.3}}}",
        bytes as f64 / secs / 1048576.0,
        bytes as f64 * 8.0 / secs / 1e9
    );
    if out.is_empty() {
        println!("{json}");
    } else {
        std::fs::File::create(&out)?.write_all(json.as_bytes())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// idle

async fn idle(o: Opts) -> Res<()> {
    let addr = o.addr("addr");
    let conns: usize = o.num("conns", 10_000);
    let concurrency: usize = o.num("concurrency", 200);
    let hold = Duration::from_secs_f64(o.num("hold", 30.0));
    let path = o.str("path", "/");
    // --no-request: connect only (a client that has not spoken yet);
    // otherwise one request per connection, then silence (an idle keep-alive
    // connection in a client's pool).
    let no_request = o.flag("no-request");
    let req = Bytes::from(format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sybench-idle\r\n\r\n"
    ));
    let held = Rc::new(RefCell::new(Vec::with_capacity(conns)));
    let failed = Rc::new(RefCell::new(0usize));
    let next = Rc::new(RefCell::new(0usize));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (held, failed, next, req) = (held.clone(), failed.clone(), next.clone(), req.clone());
        workers.push(tokio::task::spawn_local(async move {
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                {
                    let mut n = next.borrow_mut();
                    if *n >= conns {
                        break;
                    }
                    *n += 1;
                }
                let r = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut s = TcpStream::connect(addr).await?;
                    if no_request {
                        return Ok(s);
                    }
                    buf.clear();
                    let (status, keep) = h1_exchange(&mut s, &req, &mut buf).await?;
                    if !(200..300).contains(&status) || !keep {
                        return Err::<_, Box<dyn std::error::Error>>(
                            format!("status {status}, keep-alive {keep}").into(),
                        );
                    }
                    Ok(s)
                })
                .await
                .unwrap_or_else(|_| Err("no response within 5s".into()));
                match r {
                    Ok(s) => held.borrow_mut().push(s),
                    Err(e) => {
                        let mut f = failed.borrow_mut();
                        if *f == 0 {
                            eprintln!("idle: first failure: {e}");
                        }
                        *f += 1;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    println!(
        "{{\"tool\":\"sybench\",\"mode\":\"idle\",\"open\":{},\"failed\":{}}}",
        held.borrow().len(),
        failed.borrow()
    );
    std::io::stdout().flush()?;
    tokio::time::sleep(hold).await;
    Ok(())
}
