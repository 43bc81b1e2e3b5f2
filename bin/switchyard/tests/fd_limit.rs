//! At start the process raises its soft file descriptor limit to the hard
//! one, and warns, naming the numbers, when its connection limits plus a
//! reserve do not fit below it.
#![cfg(target_os = "linux")]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use switchyard_test_support::ChildGuard;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// This process's hard limit on open files, from `/proc/self/limits`.
fn hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Whether the limits these tests set can be set here (lowering a hard
/// limit always can; a hard limit below 8000 cannot be raised unprivileged).
fn can_test() -> bool {
    let ok = hard_limit().is_some_and(|h| h >= 8000);
    if !ok {
        eprintln!("skipped: the hard limit on open files is below 8000");
    }
    ok
}

/// The log of `switchyard registry` started with a soft limit of 1024 and
/// a hard limit of `hard`, up to its "registry listening" line.
fn start_log(hard: u32, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 1024 && ulimit -Hn {hard} && exec \"$0\" \"$@\""
        ))
        .arg(BIN)
        .args([
            "--log-format",
            "text",
            "registry",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg(format!("--store=embedded:{}", dir.path().display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchyard runs");
    let mut guard = ChildGuard::from_std("switchyard registry", child);
    let child = guard.std_child().expect("a std child");
    let (tx, rx) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("registry listening") {
            return log;
        }
    }
    panic!("the registry did not start:\n{log}");
}

#[test]
fn a_limit_below_the_connection_limits_is_raised_and_warned_about() {
    if !can_test() {
        return;
    }
    let log = start_log(4096, &[]);
    assert!(log.contains("raised the file descriptor limit"), "{log}");
    assert!(
        log.contains("the file descriptor limit (4096) is below")
            && log.contains("4096 (registry connections) + 256 (reserve) = 4352"),
        "{log}"
    );
}

#[test]
fn connection_limits_that_fit_start_without_a_warning() {
    if !can_test() {
        return;
    }
    let log = start_log(8000, &["--max-connections", "1000"]);
    assert!(log.contains("raised the file descriptor limit"), "{log}");
    assert!(
        !log.contains("is below what the connection limits"),
        "{log}"
    );
}
