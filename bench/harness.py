#!/usr/bin/env python3
"""The proxy benchmark: Switchyard against HAProxy, nginx and the bare backend.

Started by `bench/run` (which installs what is missing and builds the
binaries); see BENCHMARKS.md for what is measured and how to read it.

Placement: every proxy runs on core 0 (`taskset -c 0`); the backends and the
load generators share core 1. Contenders run one after another, alternating
the order every round (A B C D, then D C B A, ...), and every ratio
Switchyard/peer is taken within one round, from runs a few seconds apart.

Standard library only.
"""

import argparse
import csv
import datetime
import http.client
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CONFIGS = BENCH / "configs"
HZ = os.sysconf("SC_CLK_TCK")

PROXY_CORE = "0"
LOAD_CORE = "1"

# Ports: backends 2108x, Switchyard 2111x, HAProxy 2112x, nginx 2113x,
# Switchyard with the demo configuration 2114x. Below the ephemeral range.
# A contender without a scenario's port (the backend and nginx have no TLS
# listener) is left out of that scenario.
BACKEND = {"http": 21081, "h2": 21082, "grpc": 21083, "tcp": 21084}
CONTENDERS = {
    "direct": BACKEND,
    "switchyard": {"http": 21110, "h2": 21110, "grpc": 21111, "tcp": 21112, "https": 21113},
    "haproxy": {"http": 21120, "h2": 21120, "grpc": 21121, "tcp": 21122, "https": 21123},
    "nginx": {"http": 21130, "h2": 21133, "grpc": 21131, "tcp": 21132},
    # A second Switchyard build (--switchyard-b), for A/B runs of a change.
    "switchyard-b": {"http": 21160, "h2": 21160, "grpc": 21161, "tcp": 21162, "https": 21163},
}
# Where the TLS runs' handshake counters are read: Switchyard's admin
# listener, HAProxy's stats frontend.
ADMIN = {"switchyard": 21119, "switchyard-b": 21169}
HAPROXY_STATS = 21129
# The certificate every TLS listener serves, made with openssl for each run.
TLS_KEYS = {"ecdsa-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "rsa-2048": ["-newkey", "rsa:2048"]}
PEERS = ["haproxy", "nginx"]
GRPC_PATH = "/bench.Echo/Unary"

# Scenarios. `sat`: the saturation run (closed loop: wrk or h2load keep every
# connection/stream busy). `rate`: the open-loop run at a fixed offered rate
# well below every contender's saturation point (sybench load).
SCENARIOS = [
    {
        "name": "h1-keepalive",
        "title": "HTTP/1.1 keep-alive, small responses (64 connections)",
        "port": "http",
        "path": "/",
        "sat": {"tool": "wrk", "conns": 64},
        "rate": {"proto": "h1", "conns": 64, "rps": 20000},
    },
    {
        "name": "h1-16k",
        "title": "HTTP/1.1 keep-alive, 16 KiB responses (64 connections)",
        "port": "http",
        "path": "/16k",
        "sat": {"tool": "wrk", "conns": 64},
        "rate": {"proto": "h1", "conns": 64, "rps": 10000},
    },
    {
        "name": "h1-close",
        "title": "HTTP/1.1, new connection per request (64 concurrent)",
        "port": "http",
        "path": "/",
        "sat": {"tool": "wrk", "conns": 64, "close": True},
        "rate": {"proto": "h1", "conns": 64, "rps": 3000, "close": True},
    },
    # TLS scenarios: saturation only (sybench load speaks no TLS).
    {
        "name": "h1-tls-keepalive",
        "title": "HTTP/1.1 keep-alive over TLS, small responses (64 connections)",
        "port": "https",
        "path": "/",
        "sat": {"tool": "wrk", "conns": 64},
    },
    {
        "name": "tls-handshake",
        "title": "TLS, a new connection and a full handshake per request (64 concurrent)",
        "port": "https",
        "path": "/",
        "sat": {"tool": "tls-handshakes", "conns": 64},
    },
    {
        "name": "h2",
        "title": "HTTP/2 cleartext, 16 connections x 10 streams, HTTP/1.1 upstream",
        "port": "h2",
        "path": "/",
        "sat": {"tool": "h2load", "conns": 16, "streams": 10},
        "rate": {"proto": "h2", "conns": 16, "streams": 10, "rps": 20000},
    },
    {
        "name": "grpc",
        "title": "gRPC unary over h2c, 16 connections x 10 streams, h2c upstream",
        "port": "grpc",
        "path": GRPC_PATH,
        "sat": {"tool": "h2load", "conns": 16, "streams": 10, "grpc": True},
        "rate": {"proto": "grpc", "conns": 16, "streams": 10, "rps": 10000},
    },
    {
        "name": "tcp",
        "title": "TCP bulk throughput (4 connections, 128 KiB writes)",
        "port": "tcp",
        "tcp": {"conns": 4},
    },
]
SCENARIO_NAMES = [s["name"] for s in SCENARIOS]

# Percentiles reported and plotted.
PCTS = [50, 90, 99, 99.9, 99.99]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes and /proc


class Proc:
    """A process this harness started; stopped by its own PID only."""

    def __init__(self, name, argv, core, nice, logdir, stdout=None, cwd=None):
        self.name = name
        prefix = ["taskset", "-c", core]
        if nice:
            prefix = ["nice", "-n", str(nice)] + prefix
        self.logfile = open(logdir / f"{name}.log", "wb")
        self.p = subprocess.Popen(
            prefix + argv,
            stdout=stdout if stdout is not None else self.logfile,
            stderr=self.logfile,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logfile.close()


def family(pid):
    """The PID and its children (nginx: master and worker)."""
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_ticks(pid):
    """utime + stime of the process and its children, in clock ticks."""
    total = 0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pid):
    total = 0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def core_busy(core):
    """Busy ticks of one core (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]) - v[3] - v[4]
    return 0


def wait_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_free(port):
    with socket.socket() as s:
        # As servers bind: connections in TIME_WAIT do not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args):
        self.a = args
        self.scratch = Path(tempfile.mkdtemp(prefix="switchyard-bench."))
        os.chmod(self.scratch, 0o755)  # nginx workers run as nobody
        self.logs = self.scratch / "logs"
        self.logs.mkdir()
        self.procs = []
        self.contender_proc = {}
        self.results = []
        self.memory = {}
        self.offered = {}
        self.round = -1

    # ---- lifecycle

    def start(self, name, argv, core, port=None, stdout=None, cwd=None):
        p = Proc(name, argv, core, self.a.nice, self.logs, stdout=stdout, cwd=cwd)
        self.procs.append(p)
        if port is not None and not wait_port(port):
            raise SystemExit(f"{name} did not start listening on {port}; log: {self.logs}/{name}.log")
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def setup(self):
        a = self.a
        all_ports = list(BACKEND.values()) + [21119, 21129, 21140, 21149, 21169]
        for c in ("switchyard", "haproxy", "nginx", "switchyard-b"):
            all_ports += list(CONTENDERS[c].values())
        busy = sorted({p for p in all_ports if not port_free(p)})
        if busy:
            raise SystemExit(f"ports in use: {busy} (another bench running?)")
        # Backend content and nginx prefixes (relative paths in the configs
        # resolve under -p).
        for d in ("backend/tmp", "backend/data", "nginx/tmp"):
            (self.scratch / d).mkdir(parents=True)
        os.chmod(self.scratch / "backend", 0o755)
        os.chmod(self.scratch / "backend/data", 0o755)
        (self.scratch / "backend/data/16k").write_bytes(bytes((i * 7) & 0xFF for i in range(16384)))
        os.chmod(self.scratch / "backend/data/16k", 0o644)
        msg = bytes([0x0A, 32]) + b"x" * 32
        self.grpc_body = self.scratch / "grpc-request.bin"
        self.grpc_body.write_bytes(b"\x00" + struct.pack(">I", len(msg)) + msg)
        self.tls_dir = self.make_certificate()

        log(f"scratch {self.scratch}")
        self.start(
            "backend-nginx",
            ["nginx", "-p", f"{self.scratch}/backend/", "-c", str(CONFIGS / "backend-nginx.conf"), "-e", "stderr"],
            LOAD_CORE,
            BACKEND["http"],
        )
        self.start("backend-grpc", [a.sybench, "grpc-backend", "--listen", f"127.0.0.1:{BACKEND['grpc']}"], LOAD_CORE, BACKEND["grpc"])
        self.start("backend-tcp", [a.sybench, "tcp-sink", "--listen", f"127.0.0.1:{BACKEND['tcp']}"], LOAD_CORE, BACKEND["tcp"])

        want = [c for c in a.contenders if c != "direct"]
        if "switchyard" in want:
            self.contender_proc["switchyard"] = self.start(
                "switchyard",
                [a.switchyard, "--log-format", "text", "proxy", "--config", str(CONFIGS / "switchyard.toml")],
                PROXY_CORE,
                CONTENDERS["switchyard"]["http"],
                cwd=self.tls_dir,
            )
        if "switchyard-b" in want:
            if not a.switchyard_b:
                raise SystemExit("contender switchyard-b needs --switchyard-b BIN")
            cfg = self.scratch / "switchyard-b.toml"
            cfg.write_text((CONFIGS / "switchyard.toml").read_text().replace("127.0.0.1:2111", "127.0.0.1:2116"))
            self.contender_proc["switchyard-b"] = self.start(
                "switchyard-b",
                [a.switchyard_b, "--log-format", "text", "proxy", "--config", str(cfg)],
                PROXY_CORE,
                CONTENDERS["switchyard-b"]["http"],
                cwd=self.tls_dir,
            )
        if "haproxy" in want:
            self.contender_proc["haproxy"] = self.start(
                "haproxy", ["haproxy", "-db", "-f", str(CONFIGS / "haproxy.cfg")], PROXY_CORE, CONTENDERS["haproxy"]["http"],
                cwd=self.tls_dir,
            )
        if "nginx" in want:
            self.contender_proc["nginx"] = self.start(
                "nginx",
                ["nginx", "-p", f"{self.scratch}/nginx/", "-c", str(CONFIGS / "nginx-proxy.conf"), "-e", "stderr"],
                PROXY_CORE,
                CONTENDERS["nginx"]["http"],
            )
        for c in want:
            for port in CONTENDERS[c].values():
                wait_port(port)
        time.sleep(1.0)
        # Idle memory: after start, before any request.
        for c, p in self.contender_proc.items():
            self.memory.setdefault(c, {})["idle_kib"] = rss_kib(p.pid)
        self.demo_idle()
        self.smoke()

    def make_certificate(self):
        """A self-signed certificate for 127.0.0.1 and localhost, new for
        each run, in the scratch directory (removed with it): server.pem and
        server.key for Switchyard, combined.pem (both) for HAProxy."""
        d = self.scratch / "tls"
        d.mkdir()
        subprocess.run(["openssl", "req", "-x509", *TLS_KEYS[self.a.tls_key], "-nodes", "-keyout", str(d / "server.key"),
                        "-out", str(d / "server.pem"), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        (d / "combined.pem").write_bytes((d / "server.pem").read_bytes() + (d / "server.key").read_bytes())
        for f in ("server.key", "combined.pem"):
            os.chmod(d / f, 0o600)
        return d

    def demo_idle(self):
        """Idle RSS with the configuration `switchyard demo` runs (default
        workers: one per core, so not pinned)."""
        if "switchyard" not in self.contender_proc:
            return
        p = Proc("switchyard-demo", [self.a.switchyard, "--log-format", "text", "proxy", "--config", str(CONFIGS / "switchyard-demo.toml")],
                 "0-1", self.a.nice, self.logs)
        try:
            if wait_port(21140):
                time.sleep(1.5)
                self.memory["switchyard"]["demo_idle_kib"] = rss_kib(p.pid)
                self.memory["switchyard"]["demo_threads"] = len(os.listdir(f"/proc/{p.pid}/task"))
        finally:
            p.stop()

    def smoke(self):
        """Every contender answers every scenario correctly before timing."""
        for s in self.scenarios():
            for c in self.contenders(s):
                if "tcp" in s:
                    continue
                if "rate" in s:
                    r = self.run_rate(c, s, rate=200, duration=0.3)
                    ok = r["requests"] > 0 and r["errors"] == 0
                else:
                    r = https_get(CONTENDERS[c][s["port"]], s["path"])
                    ok = r == 200
                if not ok:
                    log(f"smoke test failed: {c} {s['name']}: {r}")
                    raise SystemExit(1)
        log("smoke tests passed")

    def scenarios(self):
        return [s for s in SCENARIOS if s["name"] in self.a.scenarios]

    def contenders(self, s):
        """The contenders measured in scenario s: those with its port."""
        return [c for c in self.a.contenders if s["port"] in CONTENDERS[c]]

    def tls_counts(self, contender):
        """(handshakes, resumed) the proxy has counted on its TLS listener
        so far: HAProxy's new and reused SSL sessions; Switchyard's accepted
        connections (it does not count resumption apart; resumed None)."""
        try:
            if contender == "haproxy":
                f = haproxy_frontend(HAPROXY_STATS, "https")
                return int(f["ssl_sess"]), int(f["ssl_reused_sess"])
            if contender in ADMIN:
                return switchyard_counter(ADMIN[contender], "switchyard_downstream_connections_total",
                                          'listener="https"'), None
        except (OSError, KeyError, ValueError) as e:
            log(f"cannot read {contender}'s handshake counters: {e}")
        return None, None

    # ---- one measurement

    def loadgen(self, argv, name):
        return Proc(name, argv, LOAD_CORE, self.a.nice, self.logs, stdout=subprocess.PIPE)

    def timed(self, contender, argv, name):
        """Runs a load generator while accounting the proxy's CPU and
        sampling its RSS. Returns (stdout, cpu_ticks, rss_max_kib, core0_other_pct, wall)."""
        proc = self.contender_proc.get(contender)
        pid = proc.pid if proc else None
        c0 = cpu_ticks(pid) if pid else 0
        b0 = core_busy(PROXY_CORE)
        t0 = time.monotonic()
        lg = self.loadgen(argv, name)
        rss_max = 0
        out = b""
        while True:
            r, _, _ = select.select([lg.p.stdout], [], [], 0.25)
            if r:
                chunk = os.read(lg.p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            if pid:
                rss_max = max(rss_max, rss_kib(pid))
        lg.p.wait()
        lg.logfile.close()
        wall = time.monotonic() - t0
        c1 = cpu_ticks(pid) if pid else 0
        b1 = core_busy(PROXY_CORE)
        cpu = c1 - c0
        other = max(0.0, ((b1 - b0) - cpu) / HZ / wall * 100) if wall > 0 else 0.0
        if lg.p.returncode != 0:
            log(f"{name} exited {lg.p.returncode}; see {self.logs}/{name}.log")
        return out.decode(errors="replace"), cpu, rss_max, other, wall

    def url(self, contender, s):
        scheme = "https" if s["port"] == "https" else "http"
        return f"{scheme}://127.0.0.1:{CONTENDERS[contender][s['port']]}{s['path']}"

    def run_sat(self, contender, s, duration):
        sat = s["sat"]
        extra = None
        if sat["tool"] in ("wrk", "tls-handshakes"):
            # Both print one JSON line: wrk through wrk-report.lua, and
            # tls-handshakes.py in the same shape.
            if sat["tool"] == "wrk":
                argv = ["wrk", "-t1", f"-c{sat['conns']}", f"-d{int(duration)}s", "--timeout", "5s",
                        "-s", str(BENCH / "wrk-report.lua")]
                if sat.get("close"):
                    argv += ["-H", "Connection: close"]
                argv.append(self.url(contender, s))
                name = f"wrk-{s['name']}-{contender}"
            else:
                argv = [sys.executable, str(BENCH / "tls-handshakes.py"), "--port", str(CONTENDERS[contender][s["port"]]),
                        "--path", s["path"], "--conns", str(sat["conns"]), "--duration", str(duration)]
                name = f"tls-{s['name']}-{contender}"
                seen0, reused0 = self.tls_counts(contender)
            out, cpu, rss, other, wall = self.timed(contender, argv, name)
            line = [l for l in out.splitlines() if l.startswith("{")]
            if not line:
                raise RuntimeError(f"{sat['tool']} printed no result: {out[-500:]}")
            d = json.loads(line[-1])
            n = d["requests"]
            errors = sum(d["errors"].values())
            secs = d["duration_us"] / 1e6
            pct = {float(q): float(v) for q, v in d["percentiles"]}
            if sat["tool"] == "tls-handshakes":
                # The client's count of full handshakes, checked against the
                # proxy's own; a resumed handshake would void the run.
                seen1, reused1 = self.tls_counts(contender)
                extra = {"handshakes": d["handshakes"], "resumed": d["resumed"], "tls": d["protocol"],
                         "first_error": d["first_error"],
                         "proxy_handshakes": seen1 - seen0 if None not in (seen0, seen1) else None,
                         "proxy_resumed": reused1 - reused0 if None not in (reused0, reused1) else None}
                if d["resumed"] or extra["proxy_resumed"]:
                    log(f"{s['name']} {contender}: {d['resumed']} handshakes resumed (client), "
                        f"{extra['proxy_resumed']} (proxy): not full handshakes")
        else:
            logf = self.scratch / f"h2load-{s['name']}-{contender}.log"
            argv = ["h2load", f"-c{sat['conns']}", f"-m{sat['streams']}", "-t1", "-D", str(int(duration)),
                    "--log-file", str(logf)]
            if sat.get("grpc"):
                argv += ["-d", str(self.grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
            argv.append(self.url(contender, s))
            out, cpu, rss, other, wall = self.timed(contender, argv, f"h2load-{s['name']}-{contender}")
            m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
            f = re.search(r"finished in ([\d.]+)(m?s)", out)
            if not m or not f:
                raise RuntimeError(f"h2load output not understood: {out[-800:]}")
            done, ok, failed = int(m.group(3)), int(m.group(4)), int(m.group(5))
            secs = float(f.group(1)) / (1000 if f.group(2) == "ms" else 1)
            n = ok
            errors = failed
            lat = []
            with open(logf) as fh:
                for line in fh:
                    parts = line.split("\t")
                    if len(parts) >= 3 and parts[1].startswith("2"):
                        lat.append(int(parts[2]))
            logf.unlink()
            lat.sort()
            pct = {}
            for q in [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]:
                if lat:
                    i = min(len(lat) - 1, max(0, math.ceil(q / 100 * len(lat)) - 1))
                    pct[float(q)] = float(lat[i])
        return self.record(contender, s, "sat", n, errors, secs, pct, cpu, rss, other, extra=extra)

    def run_rate(self, contender, s, rate=None, duration=None, record=False):
        r = s["rate"]
        rate = rate or r["rps"]
        duration = duration or self.a.duration
        argv = [self.a.sybench, "load", "--addr", f"127.0.0.1:{CONTENDERS[contender][s['port']]}", "--path", s["path"],
                "--proto", r["proto"], "--conns", str(r["conns"]), "--rate", str(rate), "--duration", str(duration),
                "--streams", str(r.get("streams", 100))]
        if r.get("close"):
            argv.append("--close")
        out, cpu, rss, other, wall = self.timed(contender, argv, f"rate-{s['name']}-{contender}")
        line = [l for l in out.splitlines() if l.startswith("{")]
        if not line:
            raise RuntimeError(f"sybench printed no result: {out[-500:]}")
        d = json.loads(line[-1])
        pct = {float(q): float(v) for q, v in d["percentiles"]}
        res = {"requests": d["requests"], "errors": d["errors"] + d["lost"], "first_error": d.get("first_error")}
        if record:
            return self.record(contender, s, "rate", d["requests"], d["errors"] + d["lost"], d["duration_s"], pct, cpu, rss, other,
                               extra={"offered_rps": rate, "first_error": d.get("first_error")})
        return res

    def run_tcp(self, contender, s, duration):
        argv = [self.a.sybench, "tcp-bulk", "--addr", f"127.0.0.1:{CONTENDERS[contender]['tcp']}",
                "--conns", str(s["tcp"]["conns"]), "--duration", str(duration)]
        out, cpu, rss, other, wall = self.timed(contender, argv, f"tcp-{contender}")
        d = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        mib = d["bytes"] / 1048576
        row = {
            "scenario": s["name"], "contender": contender, "mode": "tcp", "round": self.round,
            "mib_per_s": d["mib_per_s"], "gbit_per_s": d["gbit_per_s"],
            "cpu_us_per_mib": (cpu / HZ * 1e6 / mib) if (contender != "direct" and mib) else None,
            "rss_load_kib": rss or None, "core0_other_pct": round(other, 1),
        }
        self.results.append(row)
        return row

    def record(self, contender, s, mode, n, errors, secs, pct, cpu, rss, other, extra=None):
        row = {
            "scenario": s["name"], "contender": contender, "mode": mode, "round": self.round,
            "requests": n, "errors": errors, "rps": n / secs if secs else 0.0,
            "cpu_us_per_req": (cpu / HZ * 1e6 / n) if (contender != "direct" and n) else None,
            "percentiles_us": {str(k): v for k, v in sorted(pct.items())},
            "rss_load_kib": rss or None, "core0_other_pct": round(other, 1),
            # How busy the proxy kept its core: near 100 means the proxy
            # was the bottleneck, well below it the load generator was.
            "proxy_core_pct": round(cpu / HZ / secs * 100, 1) if (contender != "direct" and secs) else None,
        }
        if extra:
            row.update(extra)
        self.results.append(row)
        return row

    # ---- the run

    def run(self):
        a = self.a
        self.round = -1
        for s in self.scenarios():
            order = self.contenders(s)
            if "tcp" in s:
                for c in order:  # warm-up
                    self.run_tcp(c, s, 1)
                self.results = [r for r in self.results if r["round"] != -1]
                for rnd in range(a.rounds):
                    self.round = rnd
                    seq = order if rnd % 2 == 0 else order[::-1]
                    for c in seq:
                        r = self.run_tcp(c, s, a.duration)
                        log(f"{s['name']:13} r{rnd} {c:10} {r['mib_per_s']:8.0f} MiB/s  cpu/MiB "
                            f"{fmt(r['cpu_us_per_mib'])} us  other-load core0 {r['core0_other_pct']}%")
                self.round = -1
                continue
            # Warm-up: pools filled, caches and allocators warm. It also
            # caps the fixed rate at half the slowest contender's saturation
            # throughput, so that the fixed-rate run stays below saturation
            # even when the machine is busy.
            warm = [self.run_sat(c, s, a.warmup) for c in order]
            self.results = [r for r in self.results if r["round"] != -1]
            if "rate" in s:
                slowest = min(r["rps"] for r in warm)
                s = dict(s, rate=dict(s["rate"]))
                if slowest * 0.5 < s["rate"]["rps"]:
                    s["rate"]["rps"] = max(500, int(slowest * 0.5 / 500) * 500)
                    log(f"{s['name']}: fixed rate lowered to {s['rate']['rps']} req/s (slowest warm-up {slowest:.0f} req/s)")
                self.offered[s["name"]] = s["rate"]["rps"]
            for rnd in range(a.rounds):
                self.round = rnd
                seq = order if rnd % 2 == 0 else order[::-1]
                for c in seq:
                    r = self.run_sat(c, s, a.duration)
                    hs = ""
                    if "handshakes" in r:
                        hs = f" handshakes {r['handshakes']} (proxy counted {r['proxy_handshakes']}, resumed {r['resumed']})"
                    log(f"{s['name']:13} r{rnd} {c:10} sat  {r['rps']:9.0f} req/s cpu {fmt(r['cpu_us_per_req'])} us/req "
                        f"p99 {r['percentiles_us'].get('99.0', 0):8.0f} us err {r['errors']} proxy core {r['proxy_core_pct']}% "
                        f"other-load core0 {r['core0_other_pct']}%{hs}")
                if "rate" not in s:
                    continue
                for c in seq:
                    r = self.run_rate(c, s, record=True)
                    log(f"{s['name']:13} r{rnd} {c:10} rate {r['rps']:9.0f} req/s cpu {fmt(r['cpu_us_per_req'])} us/req "
                        f"p99 {r['percentiles_us'].get('99.0', 0):8.0f} us err {r['errors']} other-load core0 {r['core0_other_pct']}%")
            self.round = -1
        for c in self.a.contenders:
            if c in self.contender_proc:
                rows = [r["rss_load_kib"] for r in self.results if r["contender"] == c and r.get("rss_load_kib")]
                if rows:
                    self.memory[c]["load_max_kib"] = max(rows)
        if a.idle_conns:
            self.idle_test()

    def idle_test(self):
        """RSS with N idle client connections, two ways: each client sent one
        request and stays in its pool (keep-alive), or each client connected
        and has not sent anything yet."""
        n = self.a.idle_conns
        # Silent clients first: they allocate less, so the keep-alive test
        # after them starts from a comparable baseline (allocators keep
        # freed memory, so RSS does not fall back when clients leave).
        for mode, extra in (("connected10k", ["--no-request"]), ("idle10k", [])):
            for c, p in self.contender_proc.items():
                before = rss_kib(p.pid)
                argv = [self.a.sybench, "idle", "--addr", f"127.0.0.1:{CONTENDERS[c]['http']}", "--conns", str(n),
                        "--concurrency", "200", "--hold", "120"] + extra
                lg = self.loadgen(argv, f"{mode}-{c}")
                t0 = time.monotonic()
                line = b""
                while time.monotonic() - t0 < 90:
                    r, _, _ = select.select([lg.p.stdout], [], [], 0.5)
                    if r:
                        line += os.read(lg.p.stdout.fileno(), 4096)
                        if b"\n" in line:
                            break
                    if lg.p.poll() is not None:
                        break
                opened = time.monotonic() - t0
                time.sleep(0.5)
                rss = rss_kib(p.pid)
                held = estab(CONTENDERS[c]["http"])
                lg.stop()
                try:
                    d = json.loads(line.decode().strip().splitlines()[0])
                except (ValueError, IndexError):
                    d = {"open": 0, "failed": n}
                self.memory[c].update({
                    f"{mode}_kib": rss, f"{mode}_before_kib": before, f"{mode}_open": d["open"],
                    f"{mode}_failed": d["failed"], f"{mode}_held_at_sample": held, f"{mode}_open_secs": round(opened, 1),
                })
                log(f"{mode} {c:10} {d['open']} open ({d['failed']} failed, {held} established at sample) "
                    f"RSS {rss/1024:.1f} MiB (before {before/1024:.1f} MiB)")
                time.sleep(1.0)  # let the proxy close them


def estab(port):
    """Established server-side connections on a local port (ss)."""
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
        return len(out.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        return None


def https_get(port, path):
    """Status of one GET over a new TLS connection (certificate not verified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError as e:
        return repr(e)
    finally:
        conn.close()


def switchyard_counter(admin_port, name, labels):
    """One counter from Switchyard's admin /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return int(float(line.split()[-1]))
    raise KeyError(f"{name}{{{labels}}}")


def haproxy_frontend(stats_port, frontend):
    """A frontend's row of HAProxy's CSV statistics, by column name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5) as r:
        rows = list(csv.reader(r.read().decode().splitlines()))
    head = [h.lstrip("# ") for h in rows[0]]
    for row in rows[1:]:
        if row[:2] == [frontend, "FRONTEND"]:
            return dict(zip(head, row))
    raise KeyError(frontend)


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


# --------------------------------------------------------------------------
# summary, markdown and plot


def med_range(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(results, contenders):
    summary = {}
    for r in results:
        key = (r["scenario"], r["contender"], r["mode"])
        summary.setdefault(key, []).append(r)
    out = {}
    for (sc, c, mode), rows in summary.items():
        e = {"runs": len(rows), "errors": sum(r.get("errors", 0) for r in rows)}
        if mode == "tcp":
            e["mib_per_s"] = med_range([r["mib_per_s"] for r in rows])
            e["cpu_us_per_mib"] = med_range([r["cpu_us_per_mib"] for r in rows])
        else:
            e["rps"] = med_range([r["rps"] for r in rows])
            e["cpu_us_per_req"] = med_range([r["cpu_us_per_req"] for r in rows])
            e["requests"] = sum(r["requests"] for r in rows)
            pcts = {}
            for q in PCTS:
                pcts[str(float(q))] = med_range([r["percentiles_us"].get(str(float(q))) for r in rows])
            e["percentiles_us"] = pcts
            errs = [r.get("first_error") for r in rows if r.get("first_error")]
            if errs:
                e["first_error"] = errs[0]
            e["proxy_core_pct"] = med_range([r.get("proxy_core_pct") for r in rows])
            if "handshakes" in rows[0]:
                # TLS handshake runs: the client's counts and the proxy's.
                for k in ("handshakes", "resumed", "proxy_handshakes", "proxy_resumed"):
                    v = [r.get(k) for r in rows]
                    e[k] = None if None in v else sum(v)
                e["tls"] = sorted({r["tls"] for r in rows if r.get("tls")})
        e["rss_load_kib"] = med_range([r.get("rss_load_kib") for r in rows])
        e["core0_other_pct"] = med_range([r.get("core0_other_pct") for r in rows])
        out[f"{sc}/{c}/{mode}"] = e
    # Ratios Switchyard/peer, each from the same round (back-to-back runs).
    ratios = {}
    by = {(r["scenario"], r["contender"], r["mode"], r["round"]): r for r in results}
    for (sc, c, mode, rnd), r in by.items():
        if c != "switchyard":
            continue
        for peer in [p for p in contenders if p != "switchyard"]:
            o = by.get((sc, peer, mode, rnd))
            if not o:
                continue
            k = f"{sc}/{peer}/{mode}"
            d = ratios.setdefault(k, {})
            metrics = ["mib_per_s", "cpu_us_per_mib"] if mode == "tcp" else ["rps", "cpu_us_per_req", "p99", "p50", "p99.9"]
            for m in metrics:
                if m.startswith("p"):
                    q = {"p50": "50.0", "p99": "99.0", "p99.9": "99.9"}[m]
                    a, b = r["percentiles_us"].get(q), o["percentiles_us"].get(q)
                else:
                    a, b = r.get(m), o.get(m)
                if a is not None and b:
                    d.setdefault(m, []).append(a / b)
    ratio_summary = {k: {m: med_range(v) for m, v in d.items()} for k, d in ratios.items()}
    return out, ratio_summary


def mr(e, key, nd=1, scale=1.0, spread=True):
    v = e.get(key) if e else None
    if not v:
        return "–"
    if not spread or v["n"] < 2:
        return f"{v['median']*scale:.{nd}f}"
    return f"{v['median']*scale:.{nd}f} ({v['min']*scale:.{nd}f}–{v['max']*scale:.{nd}f})"


def pct_cell(e, q, spread=False):
    if not e:
        return "–"
    v = e["percentiles_us"].get(str(float(q)))
    if not v:
        return "–"
    if spread and v["n"] >= 2:
        return f"{v['median']:.0f} ({v['min']:.0f}–{v['max']:.0f})"
    return f"{v['median']:.0f}"


def ratio_cell(rs, key, metric, nd=2):
    v = rs.get(key, {}).get(metric)
    if not v:
        return "–"
    if v["n"] < 2:
        return f"{v['median']:.{nd}f}"
    return f"{v['median']:.{nd}f} ({v['min']:.{nd}f}–{v['max']:.{nd}f})"


def bars(summary, ratios, memory):
    """The bars of issue 3, each with its verdict and the numbers behind it."""
    out = []

    def rmed(key, metric):
        v = ratios.get(key, {}).get(metric)
        return v["median"] if v else None

    def add(text, value, ok):
        out.append((text, value, "n/a" if ok is None else ("met" if ok else "**not met**")))

    k = "h1-keepalive"
    h = rmed(f"{k}/haproxy/sat", "cpu_us_per_req")
    add("HTTP/1.1 keep-alive: CPU/request ≤ 0.8× HAProxy", f"{h:.2f}×" if h else "–", None if h is None else h <= 0.8)
    n = rmed(f"{k}/nginx/sat", "cpu_us_per_req")
    add("HTTP/1.1 keep-alive: CPU/request ≤ nginx", f"{n:.2f}×" if n else "–", None if n is None else n <= 1.0)
    d = rmed(f"{k}/direct/sat", "rps")
    add("HTTP/1.1 keep-alive: throughput ≥ 95% of direct", f"{d*100:.0f}%" if d else "–", None if d is None else d >= 0.95)
    p = rmed(f"{k}/haproxy/rate", "p99")
    add("HTTP/1.1 keep-alive: p99 at fixed rate ≤ HAProxy", f"{p:.2f}×" if p else "–", None if p is None else p <= 1.0)
    for k, label in (("h2", "HTTP/2"), ("grpc", "gRPC")):
        c = rmed(f"{k}/haproxy/sat", "cpu_us_per_req")
        errs = (summary.get(f"{k}/switchyard/sat") or {}).get("errors", 0)
        ok = None if c is None else (c <= 1.0 and errs == 0)
        note = f"{c:.2f}×" if c else "–"
        if errs:
            note += f" ({errs} failed requests)"
        add(f"{label}: CPU/request ≤ HAProxy", note, ok)
        p = rmed(f"{k}/haproxy/rate", "p99")
        add(f"{label}: p99 at fixed rate ≤ HAProxy", f"{p:.2f}×" if p else "–", None if p is None else p <= 1.0)
    sw = memory.get("switchyard", {})
    v = sw.get("demo_idle_kib")
    add("Memory: < 10 MiB RSS idle with the demo config", f"{v/1024:.1f} MiB" if v else "–", None if v is None else v < 10 * 1024)
    v = sw.get("idle10k_kib")
    n = sw.get("idle10k_open")
    add("Memory: < 100 MiB RSS with 10,000 idle client connections",
        f"{v/1024:.1f} MiB ({n} open)" if v else "–", None if v is None else (v < 100 * 1024 and (n or 0) >= 10000))
    return out


def markdown(meta, summary, ratios, memory, svg_rel, args, offered):
    L = []
    L.append("## Proxy benchmark: Switchyard vs HAProxy vs nginx")
    L.append("")
    L.append(f"Generated by `{meta['command']}` on {meta['date']} ({meta['mode']} mode: "
             f"{args.rounds} round(s) × {args.duration:g} s per run, contenders alternating). "
             "Everything below this heading up to the end marker is rewritten by the harness; "
             "raw numbers are in [`bench/results/latest.json`](bench/results/latest.json).")
    L.append("")
    L.append(f"- Machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}; load average at start "
             f"{meta['loadavg_start']}, at end {meta['loadavg_end']} (the machine is shared: other engineers compile "
             "while this runs, so look at the spread and at the per-round ratios).")
    L.append(f"- Placement: every proxy on core {PROXY_CORE} (`taskset -c {PROXY_CORE}`); the backends (nginx, sybench "
             f"gRPC echo, TCP sink) and the load generators (wrk, h2load, sybench) on core {LOAD_CORE}. "
             f"{session_note(meta)} "
             "“other load core 0” is the busy time on the proxy core not spent in the proxy.")
    L.append(f"- Versions: Switchyard {meta['switchyard']}; {meta['haproxy']}; {meta['nginx']}; {meta['wrk']}; {meta['h2load']}.")
    if any(s["port"] == "https" for s in SCENARIOS if s["name"] in args.scenarios):
        L.append(f"- TLS (h1-tls-keepalive, tls-handshake; Switchyard and HAProxy only): a self-signed "
                 f"{meta.get('tls_key', 'ecdsa-p256').upper()} certificate made with openssl for the run; Switchyard "
                 f"terminates with rustls (ring), HAProxy with {meta.get('haproxy_openssl', 'OpenSSL')}, both with their "
                 "default TLS settings (ALPN http/1.1 asked by the client).")
    L.append("- Configs: [`bench/configs/`](bench/configs/) — one worker thread each, logging off, keep-alive to "
             "the backend, and the same header work for all three (X-Forwarded-For, X-Forwarded-Proto, X-Request-Id "
             "kept or generated).")
    L.append("- CPU/req: user+system time of the proxy process (and its children: nginx master and worker) from "
             "`/proc/PID/stat` over the run, divided by the requests completed. Saturation: wrk / h2load closed loop "
             "(p50/p99/p99.9 from wrk's histogram, from h2load's per-request log). Fixed rate: `sybench load`, open loop, "
             "latency from each request's intended start time (coordinated omission corrected). Cells are "
             "median (min–max) over rounds.")
    L.append("- Fixed-rate load comes from `sybench load` ([`bench/tools`](bench/tools/src/main.rs)) rather than oha. "
             "A pacer thread with 1 µs timer slack stamps each request's intended start; tokio's timers, which "
             "oha paces with, tick in 1 ms steps and send requests in bursts. One tool speaks HTTP/1.1, h2c and "
             "gRPC unary. The harness builds it in about 30 s, where installing oha takes about 6 minutes. "
             "wrk and h2load, the usual tools, measure saturation.")
    L.append("")
    L.append("### Bars (issue 3)")
    L.append("")
    L.append("| bar | measured (Switchyard/peer, median of per-round ratios) | verdict |")
    L.append("|---|---|---|")
    for text, value, verdict in bars(summary, ratios, memory):
        L.append(f"| {text} | {value} | {verdict} |")
    L.append("")
    L.append("### Ratios Switchyard / peer (per-round pairs; < 1 is better for CPU and latency, > 1 for req/s)")
    L.append("")
    L.append("| scenario | peer | CPU/req | req/s (saturation) | p99 saturation | p99 fixed rate | CPU/req fixed rate |")
    L.append("|---|---|---|---|---|---|---|")
    for s in SCENARIOS:
        if s["name"] not in args.scenarios or "tcp" in s:
            continue
        name = s["name"]
        for peer in ["direct"] + PEERS + ["switchyard-b"]:
            if peer not in args.contenders or s["port"] not in CONTENDERS[peer]:
                continue
            sat, rate = f"{name}/{peer}/sat", f"{name}/{peer}/rate"
            cpu_sat = ratio_cell(ratios, sat, "cpu_us_per_req") if peer != "direct" else "–"
            cpu_rate = ratio_cell(ratios, rate, "cpu_us_per_req") if peer != "direct" else "–"
            L.append(f"| {name} | {peer} | {cpu_sat} | {ratio_cell(ratios, sat, 'rps')} | "
                     f"{ratio_cell(ratios, sat, 'p99')} | {ratio_cell(ratios, rate, 'p99')} | {cpu_rate} |")
    if "tcp" in args.scenarios:
        for peer in ["direct"] + PEERS:
            if peer in args.contenders:
                key = f"tcp/{peer}/tcp"
                cpu = ratio_cell(ratios, key, "cpu_us_per_mib") + " (per MiB)" if peer != "direct" else "–"
                L.append(f"| tcp | {peer} | {cpu} | {ratio_cell(ratios, key, 'mib_per_s')} (MiB/s) | – | – | – |")
    L.append("")
    for s in SCENARIOS:
        if s["name"] not in args.scenarios:
            continue
        L.append(f"### {s['name']}: {s['title']}")
        L.append("")
        if "tcp" in s:
            L.append("| contender | MiB/s | proxy CPU µs per MiB | RSS under load MiB | other load core 0 % |")
            L.append("|---|---|---|---|---|")
            for c in args.contenders:
                e = summary.get(f"tcp/{c}/tcp")
                L.append(f"| {c} | {mr(e, 'mib_per_s', 0)} | {mr(e, 'cpu_us_per_mib', 1)} | "
                         f"{mr(e, 'rss_load_kib', 1, 1/1024, spread=False)} | {mr(e, 'core0_other_pct', 0, spread=False)} |")
            L.append("")
            continue
        if "rate" not in s:
            L += sat_only_table(s, summary, args)
            continue
        rate = offered.get(s["name"], s["rate"]["rps"])
        L.append(f"Saturation: {describe_sat(s)}. Fixed rate: {rate:,} req/s offered, open loop "
                 f"({s['rate']['conns']} connections{', ' + str(s['rate'].get('streams')) + ' streams each' if s['rate'].get('streams') else ''}"
                 f"{', a new connection per request' if s['rate'].get('close') else ''}). Latencies in µs.")
        L.append("")
        L.append("| contender | req/s (sat) | CPU µs/req (sat) | p50 | p99 | p99.9 | errors | CPU µs/req (rate) | p50 @rate | p99 @rate | p99.9 @rate | RSS load MiB | other load core 0 % |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in args.contenders:
            e = summary.get(f"{s['name']}/{c}/sat")
            f = summary.get(f"{s['name']}/{c}/rate")
            errs = (e or {}).get("errors", 0) + (f or {}).get("errors", 0)
            L.append(f"| {c} | {mr(e, 'rps', 0)} | {mr(e, 'cpu_us_per_req', 1)} | {pct_cell(e, 50)} | {pct_cell(e, 99, True)} | "
                     f"{pct_cell(e, 99.9)} | {errs} | {mr(f, 'cpu_us_per_req', 1)} | {pct_cell(f, 50)} | {pct_cell(f, 99, True)} | "
                     f"{pct_cell(f, 99.9)} | {mr(e, 'rss_load_kib', 1, 1/1024, spread=False)} | {mr(e, 'core0_other_pct', 0, spread=False)} |")
        fe = [(c, summary.get(f"{s['name']}/{c}/{m}", {}).get("first_error")) for c in args.contenders for m in ("sat", "rate")]
        fe = [(c, x) for c, x in fe if x]
        if fe:
            L.append("")
            L.append("First errors seen: " + "; ".join(f"{c}: `{x}`" for c, x in fe))
        L.append("")
    L.append("### Memory (RSS)")
    L.append("")
    L.append(f"| contender | idle | under load (max over runs) | {args.idle_conns:,} idle keep-alive clients | per connection | "
             f"{args.idle_conns:,} connected, silent clients | per connection |")
    L.append("|---|---|---|---|---|---|---|")
    for c in args.contenders:
        if c == "direct":
            continue
        m = memory.get(c, {})

        def mib(k):
            return f"{m[k]/1024:.1f} MiB" if m.get(k) else "–"

        def per(mode):
            if not m.get(f"{mode}_kib") or not m.get(f"{mode}_open"):
                return "–"
            kib = (m[f"{mode}_kib"] - m[f"{mode}_before_kib"]) / m[f"{mode}_open"]
            return f"{kib:.1f} KiB ({m[f'{mode}_open']} held)"

        L.append(f"| {c} | {mib('idle_kib')} | {mib('load_max_kib')} | {mib('idle10k_kib')} | {per('idle10k')} | "
                 f"{mib('connected10k_kib')} | {per('connected10k')} |")
    sw = memory.get("switchyard", {})
    if sw.get("demo_idle_kib"):
        L.append("")
        L.append(f"Switchyard with the demo configuration ([`bench/configs/switchyard-demo.toml`](bench/configs/switchyard-demo.toml), "
                 f"default workers, {sw.get('demo_threads')} threads): {sw['demo_idle_kib']/1024:.1f} MiB idle. "
                 "nginx figures add master and worker. Idle keep-alive clients each sent one request, got the "
                 "response and then stayed connected without sending anything (a client's connection pool); "
                 "connected, silent clients opened the connection and sent nothing. Per connection: (RSS with the "
                 "clients − RSS just before) ÷ connections held. HAProxy cannot be given more than maxconn 9990 under "
                 "this machine's 20000-descriptor hard limit.")
    L.append("")
    L.append(f"![latency percentiles per contender]({svg_rel})")
    L.append("")
    L.append(f"Reproduce: `{meta['command']}` (quick check: `bench/run --quick`, under two minutes once built).")
    return "\n".join(L)


def sat_only_table(s, summary, args):
    """The table of a scenario measured at saturation only (the TLS ones)."""
    L = []
    hs = s["sat"]["tool"] == "tls-handshakes"
    unit = "handshake" if hs else "req"
    L.append(f"Saturation: {describe_sat(s)}. No fixed-rate run (`sybench load` speaks no TLS). Latencies in µs"
             f"{', from connect to the last byte of the response' if hs else ''}; “proxy core busy” is the proxy's CPU "
             "time over the run's wall time: well below 100% means the load generator, not the proxy, set the pace.")
    L.append("")
    cols = [f"{'handshakes' if hs else 'req'}/s", f"CPU µs/{unit}", "proxy core busy %", "p50", "p99", "p99.9", "errors"]
    if hs:
        cols += ["full handshakes (client)", "counted by the proxy", "resumed (client / proxy)", "negotiated"]
    cols += ["RSS load MiB", "other load core 0 %"]
    L.append("| contender | " + " | ".join(cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    for c in args.contenders:
        if s["port"] not in CONTENDERS[c]:
            continue
        e = summary.get(f"{s['name']}/{c}/sat")
        cells = [mr(e, "rps", 0), mr(e, "cpu_us_per_req", 1), mr(e, "proxy_core_pct", 0), pct_cell(e, 50),
                 pct_cell(e, 99, True), pct_cell(e, 99.9), str((e or {}).get("errors", 0))]
        if hs:
            e = e or {}

            def n(k):
                return "–" if e.get(k) is None else f"{e[k]:,}"

            cells += [n("handshakes"), n("proxy_handshakes"), f"{n('resumed')} / {n('proxy_resumed')}",
                      ", ".join(e.get("tls") or []) or "–"]
        cells += [mr(e, "rss_load_kib", 1, 1/1024, spread=False), mr(e, "core0_other_pct", 0, spread=False)]
        L.append(f"| {c} | " + " | ".join(cells) + " |")
    if hs:
        L.append("")
        L.append("Every request is its own TCP connection and full TLS handshake: the client "
                 "([`bench/tls-handshakes.py`](bench/tls-handshakes.py)) keeps no session, so it never offers one for "
                 "resumption, and counts the handshakes the server reports as resumed (must be 0). wrk and h2load "
                 "resume the session when they reconnect, so they are not used here. The proxy's own count: HAProxy's "
                 "new and reused SSL sessions on the frontend (stats `ssl_sess`, `ssl_reused_sess`), Switchyard's "
                 "accepted connections (`switchyard_downstream_connections_total`; resumption is not counted apart). "
                 "Both servers run their default session handling: rustls sends 2 TLS 1.3 tickets per handshake "
                 "(kept in its 256-entry session cache), OpenSSL under HAProxy 2 stateless tickets; no client uses "
                 "them. CPU per handshake covers the TCP accept, the handshake and one proxied request; h1-close is "
                 "the same without TLS.")
    fe = [(c, (summary.get(f"{s['name']}/{c}/sat") or {}).get("first_error")) for c in args.contenders]
    fe = [(c, x) for c, x in fe if x]
    if fe:
        L.append("")
        L.append("First errors seen: " + "; ".join(f"{c}: `{x}`" for c, x in fe))
    L.append("")
    return L


def session_note(meta):
    if meta.get("session_nice") is None:
        return "Benchmark processes ran at normal priority."
    return (f"The benchmark's session ran at autogroup nice {meta['session_nice']} (Linux shares CPU per session, so "
            "this is what keeps concurrent compiles from taking most of the proxy's core; it is restored at exit).")


def describe_sat(s):
    sat = s["sat"]
    tls = " over TLS" if s["port"] == "https" else ""
    if sat["tool"] == "wrk":
        return f"wrk, {sat['conns']} connections{', `Connection: close`' if sat.get('close') else ' keep-alive'}{tls}"
    if sat["tool"] == "tls-handshakes":
        return (f"`bench/tls-handshakes.py`, {sat['conns']} concurrent connections, each one request "
                "(`Connection: close`) after a full TLS handshake")
    return f"h2load -c{sat['conns']} -m{sat['streams']}" + (" posting one gRPC message" if sat.get("grpc") else "")


COLORS = {"direct": "#7f7f7f", "switchyard": "#d62728", "haproxy": "#1f77b4", "nginx": "#2ca02c",
          "switchyard-b": "#ff7f0e"}


def svg_plot(summary, args):
    """Latency percentile curves per contender: one panel per scenario and
    mode, x = percentile on a 'nines' scale, y = latency (log scale)."""
    scen = [s for s in SCENARIOS if s["name"] in args.scenarios and "tcp" not in s]
    modes = [("rate", "fixed offered rate"), ("sat", "saturation")]
    pw, ph, ml, mt, gap = 360, 230, 60, 40, 60
    W = ml + len(modes) * (pw + gap) + 120
    H = mt + len(scen) * (ph + gap + 20) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">Latency percentiles per contender (µs, log scale; '
           f'x: 50 → 99.99th percentile)</text>']
    xs = [50, 90, 99, 99.9, 99.99]

    def xpos(q):
        return -math.log10(1 - q / 100)  # 0.30 .. 4

    x0, x1 = xpos(50), xpos(99.99)
    for i, s in enumerate(scen):
        for j, (mode, mlabel) in enumerate(modes):
            left = ml + j * (pw + gap)
            top = mt + i * (ph + gap + 20)
            series = {}
            for c in args.contenders:
                e = summary.get(f"{s['name']}/{c}/{mode}")
                if not e:
                    continue
                pts = [(q, (e["percentiles_us"].get(str(float(q))) or {}).get("median")) for q in xs]
                pts = [(q, v) for q, v in pts if v]
                if pts:
                    series[c] = pts
            vals = [v for pts in series.values() for _, v in pts]
            if not vals:
                continue
            lo = 10 ** math.floor(math.log10(max(1.0, min(vals))))
            hi = 10 ** math.ceil(math.log10(max(vals) * 1.01))
            if hi <= lo:
                hi = lo * 10

            def X(q):
                return left + (xpos(q) - x0) / (x1 - x0) * pw

            def Y(v):
                return top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

            out.append(f'<text x="{left + pw/2}" y="{top - 8}" text-anchor="middle" font-size="12">{s["name"]} — {mlabel}</text>')
            out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
            d = lo
            while d <= hi * 1.0001:
                y = Y(d)
                out.append(f'<line x1="{left}" x2="{left+pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
                out.append(f'<text x="{left-4}" y="{y+4:.1f}" text-anchor="end">{d:g}</text>')
                d *= 10
            for q in xs:
                x = X(q)
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top+ph}" stroke="#eee"/>')
                out.append(f'<text x="{x:.1f}" y="{top+ph+14}" text-anchor="middle">p{q:g}</text>')
            for c, pts in series.items():
                path = " ".join(f"{'M' if k == 0 else 'L'}{X(q):.1f},{Y(v):.1f}" for k, (q, v) in enumerate(pts))
                out.append(f'<path d="{path}" fill="none" stroke="{COLORS.get(c, "#000")}" stroke-width="2"/>')
                for q, v in pts:
                    out.append(f'<circle cx="{X(q):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{COLORS.get(c, "#000")}"/>')
    lx = ml + len(modes) * (pw + gap)
    for k, c in enumerate(args.contenders):
        y = mt + 10 + k * 18
        out.append(f'<line x1="{lx}" x2="{lx+20}" y1="{y}" y2="{y}" stroke="{COLORS.get(c, "#000")}" stroke-width="3"/>')
        out.append(f'<text x="{lx+26}" y="{y+4}">{c}</text>')
    out.append("</svg>")
    return "\n".join(out)


START = "<!-- proxy-bench:start -->"
END = "<!-- proxy-bench:end -->"


def write_benchmarks_md(section):
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        pre, rest = text.split(START, 1)
        post = rest.split(END, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, short runs: under two minutes")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--scenarios", default=",".join(SCENARIO_NAMES))
    ap.add_argument("--contenders", default="direct,switchyard,haproxy,nginx")
    ap.add_argument("--idle-conns", type=int, default=10000, help="0 skips the idle-connection test")
    ap.add_argument("--nice", type=int, default=0, help="nice level of every benchmark process within its session")
    ap.add_argument("--session-nice", type=int, default=-15,
                    help="nice of this session's scheduler autogroup (Linux autogroups share CPU per session, so a "
                         "per-process nice does nothing against other sessions' compiles); restored at exit; "
                         "'none' keeps it")
    ap.add_argument("--tls-key", choices=sorted(TLS_KEYS), default="ecdsa-p256",
                    help="the key (and signature) of the certificate the TLS scenarios serve")
    ap.add_argument("--switchyard")
    ap.add_argument("--sybench")
    ap.add_argument("--switchyard-b", help="a second Switchyard binary, measured as contender 'switchyard-b' "
                                          "(e.g. --contenders switchyard,switchyard-b,haproxy) to A/B a change")
    ap.add_argument("--out-dir", default=str(BENCH / "results"))
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--command", default="bench/run")
    ap.add_argument("--switchyard-rev", default=None, help="what the Switchyard binary was built from (default: this checkout)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the tables, plot and BENCHMARKS.md from a saved result file")
    a = ap.parse_args()
    if a.render:
        return render(Path(a.render), a)
    a.rounds = a.rounds or (1 if a.quick else 5)
    a.duration = a.duration or (1.0 if a.quick else 5.0)
    a.warmup = a.warmup or 1.0
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.contenders = [c for c in a.contenders.split(",") if c]
    for s in a.scenarios:
        if s not in SCENARIO_NAMES:
            raise SystemExit(f"unknown scenario {s}; known: {', '.join(SCENARIO_NAMES)}")
    for c in a.contenders:
        if c not in CONTENDERS:
            raise SystemExit(f"unknown contender {c}")

    if not a.switchyard or not a.sybench:
        raise SystemExit("--switchyard and --sybench are required (bench/run passes them)")
    # The proxies start in the scratch directory (their certificate paths are
    # relative): binaries given by a relative path are taken from here.
    for k in ("switchyard", "switchyard_b", "sybench"):
        if getattr(a, k) and os.sep in getattr(a, k):
            setattr(a, k, os.path.abspath(getattr(a, k)))
    t_start = time.time()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": a.command,
        "mode": "quick" if a.quick else "full",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "switchyard": a.switchyard_rev or git_rev(),
        "haproxy": tool_version(["haproxy", "-v"]).replace(" - https://haproxy.org/", ""),
        "nginx": tool_version(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": tool_version(["wrk", "-v"]).split(" [")[0],
        "h2load": tool_version(["h2load", "--version"]),
        "haproxy_openssl": haproxy_openssl(),
        "tls_key": a.tls_key,
        "nice": a.nice,
    }
    old_session_nice = set_session_nice(a.session_nice)
    meta["session_nice"] = a.session_nice if old_session_nice is not None else None
    b = Bench(a)
    try:
        b.setup()
        b.run()
    finally:
        b.stop_all()
        if old_session_nice is not None:
            set_session_nice(old_session_nice)
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["elapsed_s"] = round(time.time() - t_start, 1)
    data = {"meta": meta, "args": vars(a), "offered_rps": b.offered, "results": b.results, "memory": b.memory}
    publish(data, a, Path(a.out_dir), "quick" if a.quick else "latest", write_md=not a.no_write and not a.quick)
    log(f"done in {meta['elapsed_s']} s; results in {a.out_dir}; logs in {b.logs}")
    if not a.quick:
        shutil.rmtree(b.scratch, ignore_errors=True)
    else:
        shutil.rmtree(b.scratch / "tls", ignore_errors=True)  # the logs stay, the run's private key goes


def render(path, cli):
    data = json.loads(path.read_text())
    a = argparse.Namespace(**data["args"])
    tag = "quick" if a.quick else "latest"
    publish(data, a, path.parent, tag, write_md=not cli.no_write and not a.quick)


def publish(data, a, out_dir, tag, write_md):
    meta = data["meta"]
    summary, ratios = summarize(data["results"], a.contenders)
    data["summary"], data["ratios"] = summary, ratios
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_name = f"latency-{tag}.svg"
    (out_dir / svg_name).write_text(svg_plot(summary, a))
    (out_dir / f"{tag}.json").write_text(json.dumps(data, indent=1))
    svg_rel = os.path.relpath(out_dir / svg_name, ROOT)
    md = markdown(meta, summary, ratios, data["memory"], svg_rel, a, data.get("offered_rps", {}))
    (out_dir / f"{tag}.md").write_text(md + "\n")
    if write_md:
        write_benchmarks_md(md)
        log("BENCHMARKS.md updated")
    print(md)


def set_session_nice(value):
    """Sets the nice of this session's autogroup; returns the old one, or
    None when autogroups are off or it cannot be set."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return None
        with open("/proc/self/autogroup") as f:
            old = int(f.read().split("nice")[1])
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(value))
        return old
    except (OSError, ValueError, IndexError):
        return None


def haproxy_openssl():
    """The OpenSSL HAProxy runs on (`haproxy -vv`)."""
    try:
        out = subprocess.run(["haproxy", "-vv"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "OpenSSL"
    m = re.search(r"Running on OpenSSL version : (.+)", out)
    return m.group(1).strip() if m else "OpenSSL"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
