#!/usr/bin/env python3
"""Where the proxy's time and memory go, for the HTTP/1.1 keep-alive scenario.

    python3 bench/profile.py --switchyard BIN --sybench BIN [--steps perf,strace,callgrind,dhat,idle]

Steps (each writes raw output under bench/results/profile/ and a line to
summary.json):
  perf       perf record (cpu-clock, DWARF call graphs) under wrk saturation:
             kernel/user split of every proxy; Switchyard's top symbols by self
             and inclusive time.
  perf_h2    the same for Switchyard under h2load: HTTP/2 and gRPC unary.
  satsys     syscalls per request of every proxy at saturation (kernel
             tracepoints via perf stat, which barely perturb the run).
  strace     syscalls per request of every proxy (strace -c -f over a fixed
             number of requests at a fixed rate).
  callgrind  user-space instructions per request of every proxy (callgrind,
             counters zeroed after a warm-up and dumped after N requests), and
             Switchyard's top functions. Instruction counts do not depend on
             what else the machine runs.
  dhat       Switchyard's heap allocations per request (two runs, N1 and N2
             requests; the difference over N2-N1) and the top allocation sites.
  idle       Switchyard's heap per idle keep-alive connection (DHAT, at the
             heap's peak with K idle connections) and the sites that hold it.

Placement as in harness.py: proxy on core 0, backend and load on core 1.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import CONFIGS, CONTENDERS, LOAD_CORE, PROXY_CORE, Proc, family, log, wait_port  # noqa: E402

ROOT = harness.ROOT


class Profiler:
    def __init__(self, a):
        self.a = a
        # The proxies start in the scratch directory (the bench configs'
        # certificate paths are relative): paths given here are made absolute.
        self.out = Path(a.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        for k in ("switchyard", "sybench"):
            if os.sep in getattr(a, k):
                setattr(a, k, os.path.abspath(getattr(a, k)))
        b_args = argparse.Namespace(nice=0, sybench=a.sybench, switchyard=a.switchyard, contenders=[], scenarios=[],
                                    tls_key="ecdsa-p256")
        self.bench = harness.Bench(b_args)
        self.tls_dir = self.bench.make_certificate()
        self.summary = {}

    # ---- helpers

    def backend(self):
        b = self.bench
        for d in ("backend/tmp", "backend/data", "nginx/tmp"):
            (b.scratch / d).mkdir(parents=True, exist_ok=True)
        os.chmod(b.scratch / "backend", 0o755)
        os.chmod(b.scratch / "backend/data", 0o755)
        (b.scratch / "backend/data/16k").write_bytes(b"x" * 16384)
        b.start("backend-nginx", ["nginx", "-p", f"{b.scratch}/backend/", "-c", str(CONFIGS / "backend-nginx.conf"), "-e", "stderr"],
                LOAD_CORE, harness.BACKEND["http"])

    def proxy_argv(self, name):
        b = self.bench
        if name == "switchyard":
            return [self.a.switchyard, "--log-format", "text", "proxy", "--config", str(CONFIGS / "switchyard.toml")]
        if name == "haproxy":
            # Valgrind keeps a few descriptors for itself, and HAProxy refuses
            # to start when maxconn*2 does not fit: profile with a lower one.
            cfg = b.scratch / "haproxy-profile.cfg"
            cfg.write_text((CONFIGS / "haproxy.cfg").read_text().replace("maxconn 9990", "maxconn 5000"))
            return ["haproxy", "-db", "-f", str(cfg)]
        # The worker runs as root here so that valgrind can write its output
        # (and take commands) from the worker process.
        cfg = b.scratch / "nginx-profile.conf"
        cfg.write_text("user root;\n" + (CONFIGS / "nginx-proxy.conf").read_text())
        return ["nginx", "-p", f"{b.scratch}/nginx/", "-c", str(cfg), "-e", "stderr"]

    def start_proxy(self, name, wrapper=(), timeout=15.0):
        p = Proc(name, list(wrapper) + self.proxy_argv(name), PROXY_CORE, 0, self.bench.logs, cwd=self.tls_dir)
        if not wait_port(CONTENDERS[name]["http"], timeout=timeout):
            p.stop(signal.SIGKILL)
            raise SystemExit(f"{name} did not start; see {self.bench.logs}/{name}.log")
        return p

    def worker(self, p, name):
        """The process that serves requests (nginx: the worker)."""
        if name != "nginx":
            return p.pid
        for _ in range(50):
            kids = [k for k in family(p.pid) if k != p.pid]
            if kids:
                return kids[0]
            time.sleep(0.1)
        return p.pid

    def load(self, name, rate, duration, conns=64):
        argv = [self.a.sybench, "load", "--addr", f"127.0.0.1:{CONTENDERS[name]['http']}", "--proto", "h1",
                "--conns", str(conns), "--rate", str(rate), "--duration", str(duration)]
        out = subprocess.run(["taskset", "-c", LOAD_CORE] + argv, capture_output=True, text=True, check=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        if d["errors"] or d["lost"]:
            log(f"load against {name}: {d['errors']} errors, {d['lost']} lost: {d.get('first_error')}")
        return d["requests"]

    # ---- steps

    def perf(self):
        if subprocess.run(["perf", "stat", "-e", "cpu-clock", "true"], capture_output=True).returncode != 0:
            log("perf does not work here; skipping")
            return
        hw = subprocess.run(["perf", "stat", "-e", "instructions", "true"], capture_output=True, text=True)
        self.summary["perf_hw_counters"] = "not supported" not in (hw.stdout + hw.stderr)
        res = {}
        for name in self.a.contenders:
            p = self.start_proxy(name)
            try:
                pid = self.worker(p, name)
                url = f"http://127.0.0.1:{CONTENDERS[name]['http']}/"
                subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d2s", url], capture_output=True)
                data = self.out / f"perf-{name}.data"
                wrk = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d8s", url],
                                       stdout=subprocess.PIPE, text=True)
                time.sleep(1.0)
                subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "--call-graph", "dwarf,16384",
                                "-o", str(data), "-p", str(pid), "--", "sleep", "5"], capture_output=True)
                wrk.wait()
                reports = [("dso", ["--sort", "dso", "--no-children"])]
                if name == "switchyard":
                    reports += [("self", ["--sort", "symbol", "--no-children", "--percent-limit", "0.4"]),
                                ("inclusive", ["--sort", "symbol", "--children", "--percent-limit", "0.4"])]
                for kind, extra in reports:
                    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none"] + extra,
                                         capture_output=True, text=True).stdout
                    write(self.out / f"perf-{name}-{kind}.txt", rep)
                data.unlink(missing_ok=True)
                res[name] = {"by_dso": top_lines(self.out / f"perf-{name}-dso.txt", 6)}
                if name == "switchyard":
                    res[name]["top_self"] = top_lines(self.out / "perf-switchyard-self.txt", 25)
                log(f"perf {name}: " + "; ".join(l.split()[0] + " " + l.split()[-1] for l in res[name]["by_dso"][:3]))
            finally:
                p.stop()
        self.summary["perf"] = res

    def perf_h2(self):
        """perf on Switchyard under h2load: HTTP/2 (16 x 8 streams) and gRPC unary."""
        b = self.bench
        b.start("backend-grpc", [self.a.sybench, "grpc-backend", "--listen", f"127.0.0.1:{harness.BACKEND['grpc']}"],
                LOAD_CORE, harness.BACKEND["grpc"])
        body = b.scratch / "grpc.bin"
        msg = bytes([0x0A, 32]) + b"x" * 32
        body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        res = {}
        p = self.start_proxy("switchyard")
        try:
            for mode in ("h2", "grpc"):
                if mode == "h2":
                    args = [f"http://127.0.0.1:{CONTENDERS['switchyard']['h2']}/"]
                else:
                    args = ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                            f"http://127.0.0.1:{CONTENDERS['switchyard']['grpc']}{harness.GRPC_PATH}"]
                h2l = ["taskset", "-c", LOAD_CORE, "h2load", "-c16", "-m8", "-t1"]
                subprocess.run(h2l + ["-D", "2"] + args, capture_output=True)
                load = subprocess.Popen(h2l + ["-D", "8"] + args, stdout=subprocess.PIPE, text=True)
                time.sleep(1.5)
                data = self.out / f"perf-{mode}.data"
                subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "--call-graph", "dwarf,16384",
                                "-o", str(data), "-p", str(p.pid), "--", "sleep", "5"], capture_output=True)
                load.communicate()
                for kind, extra in (("dso", ["--sort", "dso"]), ("self", ["--sort", "symbol", "--percent-limit", "0.5"])):
                    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none", "--no-children"] + extra,
                                         capture_output=True, text=True).stdout
                    write(self.out / f"perf-switchyard-{mode}-{kind}.txt", rep)
                data.unlink(missing_ok=True)
                res[mode] = {"by_dso": top_lines(self.out / f"perf-switchyard-{mode}-dso.txt", 4),
                             "top_self": top_lines(self.out / f"perf-switchyard-{mode}-self.txt", 12)}
                log(f"perf {mode}: " + "; ".join(l.split()[0] + " " + l.split()[-1] for l in res[mode]["by_dso"][:3]))
        finally:
            p.stop()
        self.summary["perf_h2"] = res

    def satsys(self):
        """Syscalls per request at saturation (wrk, 64 connections), counted
        with kernel tracepoints (perf stat), which barely perturb the run."""
        events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in
                                                ("epoll_wait", "epoll_pwait", "writev", "sendto", "write",
                                                 "recvfrom", "read", "clock_gettime")]
        res = {}
        for name in self.a.contenders:
            p = self.start_proxy(name)
            try:
                pid = self.worker(p, name)
                url = f"http://127.0.0.1:{CONTENDERS[name]['http']}/"
                subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d2s", url], capture_output=True)
                wrk = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d8s", "-s",
                                        str(harness.BENCH / "wrk-report.lua"), url], stdout=subprocess.PIPE, text=True)
                time.sleep(1.5)
                st = subprocess.run(["perf", "stat", "-x", ",", "-e", ",".join(events + ["task-clock"]), "-p", str(pid),
                                     "--", "sleep", "5"], capture_output=True, text=True)
                out, _ = wrk.communicate()
                d = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
                rps = d["requests"] / (d["duration_us"] / 1e6)
                n = rps * 5
                counts = {}
                for line in st.stderr.splitlines():
                    f = line.split(",")
                    if len(f) > 2 and f[0].replace(".", "").isdigit():
                        counts[f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all")] = float(f[0])
                res[name] = {"rps": round(rps), "syscalls_per_request": {k: round(v / n, 2) for k, v in counts.items()
                                                                         if k != "task-clock" and v},
                             "cpu_us_per_request": round(counts.get("task-clock", 0) * 1000 / n, 2)}
                log(f"satsys {name}: {res[name]}")
            finally:
                p.stop()
        self.summary["syscalls_at_saturation"] = res

    def strace(self):
        res = {}
        for name in self.a.contenders:
            p = self.start_proxy(name)
            try:
                self.load(name, 2000, 1)  # warm: pools filled
                pid = self.worker(p, name)
                outf = self.out / f"strace-{name}.txt"
                st = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", str(outf), "-p", str(pid)])
                time.sleep(1.0)
                n = self.load(name, 2000, 5)
                time.sleep(0.5)
                st.send_signal(signal.SIGINT)
                st.wait(timeout=30)
                calls = parse_strace(outf.read_text())
                total = sum(c for c, _ in calls.values())
                res[name] = {
                    "requests": n,
                    "syscalls_per_request": round(total / n, 2),
                    "top": {k: round(c / n, 2) for k, (c, _) in sorted(calls.items(), key=lambda kv: -kv[1][0])[:8]},
                }
                log(f"strace {name}: {total / n:.2f} syscalls/request  {res[name]['top']}")
            finally:
                p.stop()
        self.summary["strace"] = res

    def callgrind_total(self, name, warm, measured):
        """Runs the proxy under callgrind: `warm` requests, then `measured`
        more, then exit. Returns (requests measured, Ir of the whole process
        tree, the dump files)."""
        tag = f"{name}-{warm}-{measured}"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}/callgrind-{tag}.%p.out",
                   "--dump-instr=no", "--trace-children=yes"]
        p = self.start_proxy(name, wrapper, timeout=60)
        n = 0
        try:
            self.load(name, 300, warm / 300)
            if measured:
                n = self.load(name, 500, measured / 500)
        finally:
            p.stop(signal.SIGTERM, timeout=60)
            time.sleep(1.0)
        dumps = list(self.out.glob(f"callgrind-{tag}.*.out*"))
        if not dumps:
            log(f"callgrind {name}: no dump written; see {self.bench.logs}/{name}.log")
        return n, sum(parse_callgrind_total(d) for d in dumps), dumps

    def callgrind(self):
        """User-space instructions per request: the difference between a run
        with W warm-up requests and one with W + N, over N. Valgrind runs
        one thread at a time; the rate is fixed (500 req/s, 64 connections),
        so each request is handled on its own, as below saturation. For
        Switchyard, the same difference per function (self and inclusive)."""
        res = {}
        for name in self.a.contenders:
            n1, ir1, d1 = self.callgrind_total(name, 1000, 0)
            n2, ir2, d2 = self.callgrind_total(name, 1000, 5000)
            n = max(1, n2 - n1)
            per = (ir2 - ir1) / n
            res[name] = {"requests": n2 - n1, "instructions_per_request": round(per)}
            log(f"callgrind {name}: {per:.0f} user-space instructions/request")
            if name == "switchyard":
                for kind, extra in (("self", []), ("inclusive", ["--inclusive=yes"])):
                    a = annotate_costs(d1, extra)
                    b = annotate_costs(d2, extra)
                    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / n, k) for k in b)
                    rows = [r for r in reversed(rows) if r[0] >= 50][:60]
                    write(self.out / f"callgrind-switchyard-{kind}.txt",
                          f"Switchyard, {kind} cost per request (user-space instructions; run with {n2} requests "
                          f"minus run with {n1}, over {n}); total {per:.0f}\n\n"
                          + "\n".join(f"{v:9.0f}  {k}" for v, k in rows) + "\n")
            for d in d1 + d2:
                d.replace(Path("/tmp") / d.name) if os.environ.get("KEEP_DUMPS") else d.unlink(missing_ok=True)
        self.summary["callgrind"] = res

    def control(self, name, pid, cmd):
        ctl = subprocess.Popen(["callgrind_control"] + cmd + [str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while ctl.poll() is None and time.monotonic() < deadline:
            try:
                self.load(name, 20, 0.1, conns=1)
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
            raise RuntimeError(f"callgrind_control {cmd} did not complete for {name}")

    def dhat_run(self, requests, idle=0):
        outf = self.out / f"dhat-{requests}-{idle}.json"
        p = self.start_proxy("switchyard", ["valgrind", "--tool=dhat", f"--dhat-out-file={outf}"], timeout=60)
        held = None
        try:
            n = self.load("switchyard", 500, requests / 500) if requests else 0
            if idle:
                held = Proc("idle", [self.a.sybench, "idle", "--addr", f"127.0.0.1:{CONTENDERS['switchyard']['http']}",
                                     "--conns", str(idle), "--concurrency", "50", "--hold", "600"],
                            LOAD_CORE, 0, self.bench.logs, stdout=subprocess.PIPE)
                line = held.p.stdout.readline()
                log(f"dhat idle: {line.strip()}")
                time.sleep(2.0)
        finally:
            if held:
                held.stop()
                time.sleep(1.0)
            p.stop(signal.SIGTERM, timeout=60)
        d = json.loads(outf.read_text())
        return n, d, outf

    def dhat(self):
        n1, d1, f1 = self.dhat_run(1000)
        n2, d2, f2 = self.dhat_run(6000)
        # DHAT: tb/tbk = total bytes/blocks, gb/gbk = bytes/blocks at the heap's peak.
        tb1 = sum(pp["tbk"] for pp in d1["pps"])
        tb2 = sum(pp["tbk"] for pp in d2["pps"])
        bytes1 = sum(pp["tb"] for pp in d1["pps"])
        bytes2 = sum(pp["tb"] for pp in d2["pps"])
        per = (tb2 - tb1) / max(1, n2 - n1)
        per_b = (bytes2 - bytes1) / max(1, n2 - n1)
        # Sites whose count grows with requests, per request.
        sites = {}
        for d, sign in ((d2, 1), (d1, -1)):
            for pp in d["pps"]:
                key = site(d["ftbl"], pp["fs"], depth=3)
                sites[key] = sites.get(key, 0) + sign * pp["tbk"]
        top = sorted(((v / (n2 - n1), k) for k, v in sites.items() if v > 0), reverse=True)[:15]
        self.summary["dhat"] = {"requests": [n1, n2], "allocations_per_request": round(per, 1),
                                "bytes_allocated_per_request": round(per_b), "top_sites_per_request": [[round(v, 2), k] for v, k in top]}
        write(self.out / "dhat-allocations.txt",
            f"allocations per request: {per:.1f} ({per_b:.0f} bytes)\n\n" + "\n".join(f"{v:6.2f}  {k}" for v, k in top) + "\n")
        log(f"dhat: {per:.1f} allocations/request, {per_b:.0f} bytes/request")
        for f in (f1, f2):
            f.replace(Path("/tmp") / f.name)

    def idle(self):
        k = self.a.idle_conns
        n0, d0, f0 = self.dhat_run(0, idle=0)
        n, d, f = self.dhat_run(0, idle=k)
        gmax0 = sum(pp.get("gb", 0) for pp in d0["pps"])
        gmax = sum(pp.get("gb", 0) for pp in d["pps"])
        agg = {}
        for pp in d["pps"]:
            k2 = site(d["ftbl"], pp["fs"], depth=3)
            agg[k2] = agg.get(k2, 0) + pp.get("gb", 0)
        sites = sorted(((v, k2) for k2, v in agg.items()), reverse=True)[:15]
        per = (gmax - gmax0) / k
        self.summary["idle_heap"] = {"connections": k, "heap_at_peak_bytes": gmax, "heap_idle_bytes": gmax0,
                                     "bytes_per_connection": round(per),
                                     "top_sites": [[round(b / k), s] for b, s in sites]}
        write(self.out / "dhat-idle-connections.txt",
            f"{k} idle keep-alive connections: heap at peak {gmax/1048576:.1f} MiB, {per:.0f} bytes per connection\n"
            "bytes per connection held at the peak, by allocation site:\n\n"
            + "\n".join(f"{b / k:8.0f}  {s}" for b, s in sites) + "\n")
        log(f"idle: {per:.0f} heap bytes per idle connection")
        for x in (f0, f):
            x.replace(Path("/tmp") / x.name)


# ---- parsing

LOCAL_PATHS = [
    (re.compile(r"/[^\s:\[\]()]*?/\.cargo/registry/src/[^/\s]+/"), "<cargo-registry>/"),
    (re.compile(r"/rustc/[0-9a-f]{40}/"), "<rustc>/"),
    (re.compile(r"/[^\s:\[\]()]*?/(?=(?:crates|bin)/[a-z-]+/src/)"), ""),
    (re.compile(r"/[^\s:\[\]()]*?/release/switchyard\b"), "<target>/release/switchyard"),
    (re.compile(r"/[^\s:\[\]()']*?/(?=bench/(?:results|configs)/)"), ""),
]


def clean(text):
    """Reports name source files; keep them free of this machine's paths."""
    for pat, rep in LOCAL_PATHS:
        text = pat.sub(rep, text)
    return text


def write(path, text):
    Path(path).write_text(clean(text))



def top_lines(path, n):
    lines = [l.rstrip() for l in Path(path).read_text().splitlines() if re.match(r"\s+\d+\.\d+%", l)]
    return lines[:n]


def parse_strace(text):
    calls = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$", line)
        if m and m.group(6) != "total":
            calls[m.group(6)] = (int(m.group(4)), int(m.group(5) or 0))
    return calls


def annotate_costs(dumps, extra):
    """Cost per function (file:function) summed over callgrind dumps."""
    costs = {}
    for d in dumps:
        out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100"] + extra + [str(d)],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(?:\*\s+)?(\S.*?)(?: \[[^\]]*\])?$", line)
            if m and "PROGRAM TOTALS" not in line:
                costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def parse_callgrind_total(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    return 0


# Frames that are the allocator or a container growing, not who asked.
ALLOC_LOC = re.compile(r"(library/std/src/sys/alloc|library/std/src/alloc\.rs|library/alloc/src/(alloc|raw_vec|boxed|"
                       r"vec/|sync\.rs|rc\.rs|string\.rs|slice\.rs|collections/)|vgpreload|/bytes-[^/]+/src/|"
                       r"/hashbrown-[^/]+/|library/core/src/(ptr|mem|alloc)|library/alloc/src/ffi)")
ALLOC_NAME = re.compile(r"^(malloc|calloc|realloc|memalign|posix_memalign|__rust_|__rdl_|alloc::|<alloc::|"
                        r"core::ptr::|hashbrown::|bytes::)")


def site(ftbl, fs, depth=2):
    """The first `depth` frames of an allocation stack that are not the
    allocator or a growing container."""
    out = []
    for i in fs:
        f = ftbl[i]
        if f == "[root]":
            continue
        m = re.match(r"0x[0-9A-Fa-f]+: (.*?)(?: \((?:in )?(.*)\))?$", f)
        name, loc = (m.group(1), m.group(2) or "") if m else (f, "")
        if ALLOC_LOC.search(loc) or ALLOC_NAME.search(name):
            continue
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)
        loc = re.sub(r".*/(registry/src/[^/]+/|rustc/[0-9a-f]+/library/|sy-head/|work/main/)", "", loc)
        if name == "UnknownInlinedFun":
            name = "(inlined)"
        out.append(f"{name} [{loc}]" if loc else name)
        if len(out) == depth:
            break
    return " <- ".join(out) if out else "(allocator only)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--sybench", required=True)
    ap.add_argument("--steps", default="perf,perf_h2,satsys,strace,callgrind,dhat,idle")
    ap.add_argument("--contenders", default="switchyard,haproxy,nginx")
    ap.add_argument("--idle-conns", type=int, default=1000)
    ap.add_argument("--session-nice", type=int, default=-15)
    ap.add_argument("--out", default=str(harness.BENCH / "results" / "profile"))
    a = ap.parse_args()
    a.contenders = a.contenders.split(",")
    old = harness.set_session_nice(a.session_nice)
    pr = Profiler(a)
    try:
        pr.backend()
        for step in a.steps.split(","):
            getattr(pr, step)()
    finally:
        pr.bench.stop_all()
        if old is not None:
            harness.set_session_nice(old)
    path = pr.out / "summary.json"
    prev = json.loads(path.read_text()) if path.exists() else {}
    prev.update(pr.summary)
    write(path, json.dumps(prev, indent=1))
    print(json.dumps(pr.summary, indent=1))


if __name__ == "__main__":
    main()
