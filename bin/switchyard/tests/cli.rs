//! The `switchyard` command as scripts see it: flags, help, exit codes,
//! config checking and a proxy that starts, serves and drains on SIGTERM.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("switchyard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn version_and_help_on_every_subcommand() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("switchyard "), "{out}");
    for sub in [
        &["--help"][..],
        &["proxy", "--help"],
        &["check", "--help"],
        &["demo", "--help"],
    ] {
        let (code, out, _) = run(sub);
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage:"), "{sub:?}: {out}");
    }
    // Usage errors exit 2.
    let (code, _, err) = run(&["proxy"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&["no-such-command"]);
    assert_eq!(code, 2);
}

#[test]
fn check_accepts_the_documented_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/proxy.toml");
    let (code, out, err) = run(&["check", "--config", example]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"), "{out}");
}

const BAD: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1"
protocol = "htp"

  [[listeners.routes]]
  cluster = "nope"
  timeout = 5

[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:9001"] }
balanse = "round-robin"
"#;

#[test]
fn check_reports_every_error_with_location_and_exits_1() {
    let f = write_config(BAD);
    let path = f.path().to_str().unwrap();
    let (code, _, err) = run(&["check", "--config", path]);
    assert_eq!(code, 1, "{err}");
    // Located errors read "file:line:column: path: message".
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.split_once(".toml:")
                .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    assert!(lines.len() >= 5, "expected every error:\n{err}");
    for (needle, line) in [
        ("listeners[0].listen", ":4:"),
        ("listeners[0].protocol", ":5:"),
        ("timeout", ":9:"),
        ("balanse", ":14:"),
        ("nope", ":8:"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle) && l.contains(line)),
            "no error for {needle} at line {line}:\n{err}"
        );
    }
    // The proxy refuses to start with the same messages.
    let (pcode, _, perr) = run(&["proxy", "--config", path]);
    assert_eq!(pcode, 1);
    for l in &lines {
        assert!(perr.contains(l), "proxy output lacks {l:?}:\n{perr}");
    }
    let (code, _, err) = run(&["check", "--config", "/nonexistent/switchyard.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/switchyard.toml"), "{err}");
}

#[test]
fn proxy_serves_and_drains_on_sigterm() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    // Read one request head; bodies are not sent in this test.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = write_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[runtime]\nworkers = 1\nshutdown_grace = \"5s\"\n[log]\naccess_log = true\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:{port}\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\
         [[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"{backend_addr}\"] }}\n"
    ));
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "proxy",
            "--config",
            f.path().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let get = |port: u16, path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).ok()?;
        Some(out)
    };
    loop {
        if get(admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "proxy never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = get(port, "/x").expect("proxied response");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    // SIGTERM: drain and exit 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let first = logs.lines().next().expect("json logs");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(v.get("level").is_some(), "{first}");
    assert!(logs.contains("SIGTERM"), "{logs}");
    // One JSON access-log line for the proxied request, with its facts.
    let access: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "switchyard::access")
        .unwrap_or_else(|| panic!("no access log line:\n{logs}"));
    assert_eq!(access["method"], "GET", "{access}");
    assert_eq!(access["path"], "/x", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["route"], "public/0", "{access}");
    assert_eq!(access["cluster"], "api", "{access}");
    assert_eq!(access["endpoint"], backend_addr.to_string(), "{access}");
    assert_eq!(access["attempts"], 1, "{access}");
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{access}"
    );
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
}
