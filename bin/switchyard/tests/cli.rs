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
    // SIGHUP reloads the configuration file: a listener added to it
    // serves, and the running one keeps serving.
    let port2 = free_port();
    std::fs::write(
        f.path(),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[runtime]\nworkers = 1\nshutdown_grace = \"5s\"\n[log]\naccess_log = true\n\
             [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:{port}\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\
             [[listeners]]\nname = \"second\"\nlisten = \"127.0.0.1:{port2}\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\
             [[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"{backend_addr}\"] }}\n"
        ),
    )
    .unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(port2, "/x").is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.ends_with("ok")) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP ended the proxy"
        );
        assert!(
            Instant::now() < deadline,
            "the reloaded listener never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = get(port, "/x").expect("proxied response after SIGHUP");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let generation = get(admin, "/config").expect("config");
    assert!(generation.contains("\"generation\":2"), "{generation}");
    // SIGTERM: drain and exit 0.
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
    // Addresses are logged as addresses, not as Rust `Option`s.
    assert!(!logs.contains("Some("), "{logs}");
    let admin_line: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "admin listening")
        .unwrap_or_else(|| panic!("no admin start-up line:\n{logs}"));
    assert_eq!(
        admin_line["admin"],
        format!("127.0.0.1:{admin}"),
        "{admin_line}"
    );
    let first = logs.lines().next().expect("json logs");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(v.get("level").is_some(), "{first}");
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(logs.contains("SIGHUP received"), "{logs}");
    assert!(logs.contains("configuration reloaded"), "{logs}");
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET with `Connection: close`; the whole answer, or `None`
/// if nothing answered.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).ok()?;
    Some(out)
}

/// Sends SIGTERM to a child this test started, and waits for it.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap()
}

#[test]
fn port_in_use_fails_with_the_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let admin = free_port();
    let f = write_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:{port}\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\
         [[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"127.0.0.1:9\"] }}\n"
    ));
    let (code, _, err) = run(&[
        "--log-format",
        "json",
        "proxy",
        "--config",
        f.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let os_error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
    // "Address already in use (os error 98)" on Linux; the wording differs
    // elsewhere, the "os error" suffix does not.
    let line = err
        .lines()
        .find(|l| l.starts_with("switchyard: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(
        err.to_lowercase().contains("in use"),
        "{err} (expected something like {os_error})"
    );
    drop(taken);
}

#[test]
fn demo_usage_errors_name_the_flag_and_exit_2() {
    let (code, out, _) = run(&["demo", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("at least 5s"), "{out}");
    assert!(out.contains("--backends-only"), "{out}");

    let (code, _, err) = run(&["demo", "--duration", "4s", "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--duration must be at least 5s"), "{err}");
    assert!(!err.contains("chaos script needs a duration"), "{err}");

    let (code, _, err) = run(&["demo", "--rate", "0", "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--rate") && err.contains("must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("http_backends"), "{err}");

    for args in [
        &["demo", "--rate", "fast"][..],
        &["demo", "--duration", "soon"],
        &["demo", "--backends-only", "--rate", "100"],
        &["demo", "--backends-only", "--quiet"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let flag = args.iter().rev().find(|a| a.starts_with("--")).unwrap();
        assert!(err.contains(flag), "{args:?} does not name {flag}: {err}");
    }
}

/// The newcomer's path: `demo --backends-only` in one terminal, the
/// documented example in another, and a request through it answered by a
/// backend.
#[test]
fn the_example_proxies_to_demo_backends_only() {
    let mut backends = Command::new(BIN)
        .args(["demo", "--backends-only"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says where it serves, then serves until SIGTERM.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = backends.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !banner.contains("Ctrl-C") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
            }
            Err(_) => {
                let _ = backends.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(backends.stderr.as_mut().unwrap(), &mut err);
                panic!("the backends never said they serve:\n{banner}{err}");
            }
        }
    }
    for addr in ["127.0.0.1:9001", "127.0.0.1:9002"] {
        assert!(banner.contains(addr), "{banner}");
    }
    assert!(
        banner.contains("api-1") && banner.contains("api-2"),
        "{banner}"
    );

    // The example as documented, with only its listen ports made free ones
    // so that it cannot collide with anything else on the machine.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/proxy.toml"
    ))
    .unwrap();
    let (admin, public, cache) = (free_port(), free_port(), free_port());
    let mut config = example.clone();
    for (from, to) in [
        ("listen = \"127.0.0.1:9901\"", admin),
        ("listen = \"127.0.0.1:8080\"", public),
        ("listen = \"127.0.0.1:6380\"", cache),
    ] {
        assert!(config.contains(from), "the example changed: {from}");
        config = config.replace(from, &format!("listen = \"127.0.0.1:{to}\""));
    }
    let f = write_config(&config);
    let mut proxy = Command::new(BIN)
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
    while !http_get(admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        if Instant::now() > deadline {
            let _ = proxy.kill();
            let _ = backends.kill();
            panic!("the proxy never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = http_get(public, "/api/hello").unwrap_or_default();
    let proxy_status = terminate(&mut proxy);
    let backends_status = terminate(&mut backends);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"backend\":\"api-1\"") || answer.contains("\"backend\":\"api-2\""),
        "{answer}"
    );
    assert_eq!(proxy_status.code(), Some(0));
    assert_eq!(backends_status.code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(proxy.stderr.as_mut().unwrap(), &mut logs).unwrap();
    // Backends that answer: no 502s, no connect warnings.
    assert!(!logs.contains("\"level\":\"WARN\""), "{logs}");
    // It says what it served when it stops.
    let mut rest = String::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains("stopped:"), "{rest}");
}

#[test]
fn check_runs_the_proxys_own_start_checks() {
    // Valid TOML, but the proxy refuses an admin port beyond loopback
    // without a token: check must refuse it too.
    let f = write_config(
        "[admin]\nlisten = \"0.0.0.0:19901\"\n\n[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:18080\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n",
    );
    let path = f.path().to_str().unwrap();
    let (code, out, err) = Command::new(BIN)
        .args(["check", "--config", path])
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("token"), "{err}");
    assert!(!out.contains("ok"), "{out}");
}

#[test]
fn check_warns_of_shadowed_routes_and_grpc_to_http1() {
    let f = write_config(
        "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:18080\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n  [[listeners.routes]]\n  match = { path_prefix = \"/helloworld.Greeter/\" }\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n",
    );
    let (code, out, err) = run(&["check", "--config", f.path().to_str().unwrap()]);
    // Warnings do not fail the check; each names its location.
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 warning(s)"), "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(":8:3: listeners[0].routes[1]") && w.contains("can never match")),
        "{err}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("looks like gRPC") && w.contains("http1")),
        "{err}"
    );
}

#[test]
fn proxy_with_watch_reloads_when_its_file_changes() {
    let (port, port2, admin) = (free_port(), free_port(), free_port());
    let config = |listeners: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[runtime]\nworkers = 1\n{listeners}\
             [[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"127.0.0.1:9\"] }}\n"
        )
    };
    let listener = |name: &str, port: u16| {
        format!(
            "[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n  [[listeners.routes]]\n  cluster = \"api\"\n"
        )
    };
    let f = write_config(&config(&listener("public", port)));
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "proxy", "--watch", "--config"])
        .arg(f.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what} did not happen");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("ready", &|| {
        http_get(admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    // A broken edit is refused and the running configuration serves on.
    std::fs::write(f.path(), "[[listeners]\n").unwrap();
    wait("the refused reload", &|| {
        http_get(admin, "/metrics")
            .is_some_and(|m| m.contains("switchyard_config_reloads_total{result=\"failure\"} 1"))
    });
    // The fixed file is applied: the added listener serves.
    std::fs::write(
        f.path(),
        config(&(listener("public", port) + &listener("second", port2))),
    )
    .unwrap();
    wait("the second listener", &|| http_get(port2, "/").is_some());
    let cfg = http_get(admin, "/config").unwrap();
    assert!(cfg.contains("\"generation\":2"), "{cfg}");
    assert_eq!(terminate(&mut child).code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("configuration file changed: reloading"),
        "{logs}"
    );
    assert!(logs.contains("configuration reload refused"), "{logs}");
}

#[test]
fn registry_tls_flags_are_checked_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("store").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let missing = dir.path().join("missing.pem").display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    // (flags, exit code, what the error names): a certificate without its
    // key is a usage error; files that are not there, or hold no
    // certificate, fail the start.
    let cases: [(Vec<&str>, i32, &str); 3] = [
        (vec!["--tls-cert", "cert.pem"], 2, "--tls-key"),
        (
            vec!["--tls-cert", &missing, "--tls-key", &missing],
            1,
            &missing,
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &garbage],
            1,
            &garbage,
        ),
    ];
    for (flags, expected, named) in cases {
        let mut args = vec!["registry", "--listen", &listen, "--store", &store];
        args.extend(flags);
        let (code, _, err) = run(&args);
        assert_eq!(code, expected, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
