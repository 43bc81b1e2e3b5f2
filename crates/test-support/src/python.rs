//! Python `grpcio` as a real third-party gRPC peer.
//!
//! The scripts live in `crates/test-support/python/` and generate their stubs
//! at start-up from the same `echo.proto` as the Rust service. They run in a
//! private venv at `<workspace>/target/pyvenv`, created on first use with
//! `python3 -m venv` and filled with the pinned packages of
//! `python/requirements/grpc.txt`. A failed install panics with pip's
//! output: a missing peer must fail the test, never skip it.
//!
//! Set `SWITCHYARD_PYTHON` to use another interpreter than `python3` to
//! create the venv.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::process::ChildGuard;

/// How long the Python server may take to print `LISTENING`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the conformance client may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// A venv lock older than this was left by a killed process.
const STALE_LOCK: Duration = Duration::from_secs(15 * 60);

const IMPORT_CHECK: &str = "import grpc, grpc_tools, google.protobuf";

/// Errors of [`run_py_grpc_client`].
#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("could not run the python gRPC client: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("the python gRPC client did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the python gRPC client failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("the python gRPC client printed no JSON summary ({reason})\nstdout:\n{stdout}")]
    BadOutput { reason: String, stdout: String },
}

/// `crates/test-support/python/`.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `crates/test-support/proto/`, the include root of `echo.proto`.
pub fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// The venv directory, created and provisioned on first call (blocking; call
/// through `spawn_blocking` from async code, as the helpers here do).
/// Panics with the failing command's output if provisioning fails.
pub fn python_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    // OnceLock serialises the threads of this process; the lock directory in
    // `named_venv` serialises test binaries that run at the same time.
    VENV.get_or_init(|| named_venv("pyvenv", "grpc.txt", IMPORT_CHECK))
        .clone()
}

/// A venv `target/<name>` holding exactly the pinned packages of
/// `python/requirements/<requirements>`, provisioned on first use (blocking)
/// and reused while it was installed from the same file and `import_check`
/// (Python code) runs. Pinned files keep a new upstream release from
/// changing what a test runs against. Panics with pip's output when
/// installation fails twice.
pub fn named_venv(name: &str, requirements: &str, import_check: &str) -> PathBuf {
    let venv = workspace_root().join("target").join(name);
    let _lock = DirLock::acquire(&venv.with_extension("lock"));
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let base = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut create = Command::new(&base);
        create.arg("-m").arg("venv").arg(&venv);
        if let Err(err) = run(create, &format!("creating the venv with {base}")) {
            panic!("{err}");
        }
    }
    let file = scripts_dir().join("requirements").join(requirements);
    let wanted = std::fs::read_to_string(&file)
        .unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
    // A copy of the file the venv was installed from.
    let stamp = venv.join("switchyard-requirements.txt");
    let installed = std::fs::read_to_string(&stamp).ok();
    if installed.as_deref() == Some(wanted.as_str()) && imports_ok(&python, import_check) {
        return venv;
    }
    let _ = std::fs::remove_file(&stamp);
    let what = format!("pip install -r {}", file.display());
    // One retry: a fresh machine installs hundreds of MB, and one dropped
    // download should not fail the test run.
    if let Err(first) = run(pip_install(&python, &file), &what) {
        eprintln!("{first}\nretrying once");
        if let Err(second) = run(pip_install(&python, &file), &what) {
            panic!("{second}");
        }
    }
    assert!(
        imports_ok(&python, import_check),
        "`{import_check}` still fails in {} after {what}; delete that directory and retry",
        venv.display()
    );
    std::fs::write(&stamp, &wanted)
        .unwrap_or_else(|err| panic!("writing {}: {err}", stamp.display()));
    venv
}

/// The venv's interpreter.
pub fn venv_python() -> PathBuf {
    python_venv().join("bin").join("python")
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn pip_install(python: &Path, requirements: &Path) -> Command {
    let mut install = Command::new(python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(requirements);
    install
}

fn imports_ok(python: &Path, import_check: &str) -> bool {
    Command::new(python)
        .args(["-c", import_check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` to completion; on failure, a message with stderr first and
/// the end of stdout, since logs that cut long output keep the head and the
/// tail, and pip's reason for failing is on stderr.
fn run(mut command: Command, what: &str) -> Result<Output, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{what}: could not run {command:?}: {err}"))?;
    if output.status.success() {
        return Ok(output);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    Err(format!(
        "{what} failed ({}):\nstderr:\n{}\nlast lines of stdout:\n{tail}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A cross-process mutex: a directory that only one process can create.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path) -> DirLock {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|err| panic!("creating {}: {err}", parent.display()));
        }
        let deadline = Instant::now() + STALE_LOCK;
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return DirLock(path.to_owned()),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|meta| meta.modified())
                        .ok()
                        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_dir(path);
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "waited {STALE_LOCK:?} for the venv lock {}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(err) => panic!("creating the venv lock {}: {err}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

async fn venv_python_async() -> PathBuf {
    match tokio::task::spawn_blocking(venv_python).await {
        Ok(python) => python,
        // Re-raise the provisioning panic with its original message.
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

fn script_command(python: &Path, script: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .arg("-u")
        .arg(scripts_dir().join(script))
        // No __pycache__ inside the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Second line of defence behind ChildGuard, for futures dropped early.
        .kill_on_drop(true);
    command
}

/// `python/grpc_echo_server.py` running on 127.0.0.1; killed on drop.
#[derive(Debug)]
pub struct PyGrpcServer {
    name: String,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    child: ChildGuard,
}

impl PyGrpcServer {
    /// Starts a server named `py-grpc` on a free port.
    pub async fn start() -> PyGrpcServer {
        Self::start_on("py-grpc", 0).await
    }

    /// Starts a server with this name (reported in `EchoReply.server`) on
    /// `port` (0: a free one). Panics, with the server's stderr, if it does
    /// not report `LISTENING` within a minute.
    pub async fn start_on(name: &str, port: u16) -> PyGrpcServer {
        Self::start_with(name, port, &[]).await
    }

    /// Starts a server whose every call fails at once with `code` (a
    /// trailers-only answer).
    pub async fn start_failing(name: &str, code: i32) -> PyGrpcServer {
        Self::start_with(name, 0, &["--fail-code", &code.to_string()]).await
    }

    /// Starts a server that speaks gRPC over TLS (grpcio's own TLS stack)
    /// with this PEM certificate chain and key.
    pub async fn start_tls(name: &str, cert: &str, key: &str) -> PyGrpcServer {
        Self::start_with(name, 0, &["--tls-cert", cert, "--tls-key", key]).await
    }

    async fn start_with(name: &str, port: u16, extra: &[&str]) -> PyGrpcServer {
        let python = venv_python_async().await;
        let mut child = script_command(&python, "grpc_echo_server.py")
            .args(["--name", name, "--port", &port.to_string()])
            .args(extra)
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {}: {err}", python.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let mut guard = ChildGuard::new(format!("python gRPC server {name}"), child);
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pump = pump_lines(stderr_pipe, Some(stderr.clone()), "py-grpc stderr");

        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(SERVER_START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    return Ok(port.trim().parse::<u16>().ok());
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let port = match listening {
            Ok(Ok(Some(port))) => port,
            outcome => {
                guard.kill();
                // The pump ends at EOF once the child is gone.
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_pump).await;
                panic!(
                    "python gRPC server {name} did not report LISTENING ({outcome:?}); stderr:\n{}",
                    lock(&stderr)
                );
            }
        };
        // Keep draining stdout so a chatty server never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "py-grpc stdout", "{line}");
            }
        });
        PyGrpcServer {
            name: name.to_owned(),
            addr: (Ipv4Addr::LOCALHOST, port).into(),
            stderr,
            child: guard,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://<addr>`, the form tonic endpoints take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Kills the server now (also done on drop).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

fn pump_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    sink: Option<Arc<Mutex<String>>>,
    label: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "py-grpc", source = label, "{line}");
            if let Some(sink) = &sink {
                let mut sink = lock(sink);
                sink.push_str(&line);
                sink.push('\n');
            }
        }
    })
}

fn lock(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    text.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `python/grpc_echo_client.py` against `target` (`host:port`, e.g. a
/// [`GrpcBackend`](crate::GrpcBackend)'s or the proxy's address) and returns
/// its JSON summary: `{"target", "ok", "servers": [names], "checks": {name:
/// {"ok", ...}}}`. Any failed check is an `Err` carrying the full output.
pub async fn run_py_grpc_client(
    target: impl std::fmt::Display,
) -> Result<serde_json::Value, PyError> {
    run_py_grpc_client_with(target, &[]).await
}

/// Like [`run_py_grpc_client`] with extra arguments, e.g. `["--scenario",
/// "long-streams", "--deadline", "0"]` (see the script's docstring).
pub async fn run_py_grpc_client_with(
    target: impl std::fmt::Display,
    args: &[&str],
) -> Result<serde_json::Value, PyError> {
    let python = venv_python_async().await;
    let mut command = script_command(&python, "grpc_echo_client.py");
    command.arg(target.to_string()).args(args);
    // On timeout the future is dropped and kill_on_drop ends the child.
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .map_err(|_| PyError::Timeout(CLIENT_TIMEOUT))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(PyError::Failed {
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let Some(last) = stdout.lines().rev().find(|line| !line.trim().is_empty()) else {
        return Err(PyError::BadOutput {
            reason: "empty output".to_owned(),
            stdout,
        });
    };
    serde_json::from_str(last).map_err(|err| PyError::BadOutput {
        reason: err.to_string(),
        stdout: stdout.clone(),
    })
}
