#!/usr/bin/env python3
"""Where the proxy's time and memory go, for the HTTP/1.1 keep-alive scenario.

    python3 bench/profile.py --switchyard BIN --sybench BIN [--steps perf,strace,callgrind,dhat,idle]

Steps (each writes raw output under bench/results/profile/ and a line to
summary.json):
  perf       perf record (cpu-clock, DWARF call graphs) on Switchyard under wrk
             saturation; top symbols by self time and by inclusive time.
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
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        b_args = argparse.Namespace(nice=0, sybench=a.sybench, switchyard=a.switchyard, contenders=[], scenarios=[])
        self.bench = harness.Bench(b_args)
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
        return ["nginx", "-p", f"{b.scratch}/nginx/", "-c", str(CONFIGS / "nginx-proxy.conf"), "-e", "stderr"]

    def start_proxy(self, name, wrapper=(), timeout=15.0):
        p = Proc(name, list(wrapper) + self.proxy_argv(name), PROXY_CORE, 0, self.bench.logs)
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
        p = self.start_proxy("switchyard")
        try:
            url = f"http://127.0.0.1:{CONTENDERS['switchyard']['http']}/"
            subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d2s", url], capture_output=True)
            data = self.out / "perf-switchyard.data"
            wrk = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d8s", url], stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "--call-graph", "dwarf,16384",
                            "-o", str(data), "-p", str(p.pid), "--", "sleep", "5"], capture_output=True)
            wrk.wait()
            for kind, extra in (("self", ["--no-children"]), ("inclusive", ["--children"])):
                rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "symbol", "-g", "none",
                                      "--percent-limit", "0.4"] + extra, capture_output=True, text=True).stdout
                (self.out / f"perf-switchyard-{kind}.txt").write_text(rep)
            # Self time grouped by shared object: kernel vs the binary vs libc.
            rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-g", "none", "--no-children"],
                                 capture_output=True, text=True).stdout
            (self.out / "perf-switchyard-dso.txt").write_text(rep)
            data.unlink(missing_ok=True)
            self.summary["perf"] = {"top_self": top_lines(self.out / "perf-switchyard-self.txt", 25),
                                    "by_dso": top_lines(self.out / "perf-switchyard-dso.txt", 8)}
            log("perf: done")
        finally:
            p.stop()

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

    def callgrind(self):
        res = {}
        for name in self.a.contenders:
            outf = self.out / f"callgrind-{name}.%p.out"
            wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}", "--dump-instr=no",
                       "--collect-atstart=yes"]
            if name == "nginx":
                wrapper.append("--trace-children=yes")
            p = self.start_proxy(name, wrapper, timeout=60)
            try:
                pid = self.worker(p, name)
                self.load(name, 300, 3)  # warm
                time.sleep(0.5)
                subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True)
                n = self.load(name, 500, 10)
                time.sleep(0.5)
                subprocess.run(["callgrind_control", "-d", "measured", str(pid)], capture_output=True)
                time.sleep(1.0)
                dumps = sorted(self.out.glob(f"callgrind-{name}.{pid}.out*"), key=lambda f: f.stat().st_mtime)
                measured = [d for d in dumps if "measured" in d.read_text(errors="replace")[:4000]]
                dump = (measured or dumps)[-1]
                ir = parse_callgrind_total(dump)
                res[name] = {"requests": n, "instructions_per_request": round(ir / n)}
                if name == "switchyard":
                    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(dump)],
                                         capture_output=True, text=True).stdout
                    (self.out / "callgrind-switchyard-inclusive.txt").write_text(ann)
                    ann = subprocess.run(["callgrind_annotate", "--threshold=95", str(dump)], capture_output=True, text=True).stdout
                    (self.out / "callgrind-switchyard-self.txt").write_text(ann)
                log(f"callgrind {name}: {ir / n:.0f} instructions/request (user space)")
            finally:
                p.stop(signal.SIGTERM, timeout=30)
                for f in self.out.glob(f"callgrind-{name}.*.out*"):
                    if name != "switchyard" or "-inclusive" in f.name:
                        f.unlink(missing_ok=True)
        for f in self.out.glob("callgrind-switchyard.*.out*"):
            f.unlink(missing_ok=True)
        self.summary["callgrind"] = res

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
                key = site(d["ftbl"], pp["fs"])
                sites[key] = sites.get(key, 0) + sign * pp["tbk"]
        top = sorted(((v / (n2 - n1), k) for k, v in sites.items() if v > 0), reverse=True)[:15]
        self.summary["dhat"] = {"requests": [n1, n2], "allocations_per_request": round(per, 1),
                                "bytes_allocated_per_request": round(per_b), "top_sites_per_request": [[round(v, 2), k] for v, k in top]}
        (self.out / "dhat-allocations.txt").write_text(
            f"allocations per request: {per:.1f} ({per_b:.0f} bytes)\n\n" + "\n".join(f"{v:6.2f}  {k}" for v, k in top) + "\n")
        log(f"dhat: {per:.1f} allocations/request, {per_b:.0f} bytes/request")
        for f in (f1, f2):
            f.unlink(missing_ok=True)

    def idle(self):
        k = self.a.idle_conns
        n0, d0, f0 = self.dhat_run(0, idle=0)
        n, d, f = self.dhat_run(0, idle=k)
        gmax0 = sum(pp.get("gb", 0) for pp in d0["pps"])
        gmax = sum(pp.get("gb", 0) for pp in d["pps"])
        sites = sorted(((pp.get("gb", 0), site(d["ftbl"], pp["fs"], depth=3)) for pp in d["pps"]), reverse=True)[:15]
        per = (gmax - gmax0) / k
        self.summary["idle_heap"] = {"connections": k, "heap_at_peak_bytes": gmax, "heap_idle_bytes": gmax0,
                                     "bytes_per_connection": round(per),
                                     "top_sites": [[round(b / k), s] for b, s in sites]}
        (self.out / "dhat-idle-connections.txt").write_text(
            f"{k} idle keep-alive connections: heap at peak {gmax/1048576:.1f} MiB, {per:.0f} bytes per connection\n"
            "bytes per connection held at the peak, by allocation site:\n\n"
            + "\n".join(f"{b / k:8.0f}  {s}" for b, s in sites) + "\n")
        log(f"idle: {per:.0f} heap bytes per idle connection")
        for x in (f0, f):
            x.unlink(missing_ok=True)


# ---- parsing


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


def parse_callgrind_total(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    return 0


ALLOC = re.compile(r"(malloc|calloc|realloc|__rust_alloc|__rust_realloc|alloc::|__rdl_|::alloc|RawVec|raw_vec|"
                   r"bytes_mut::|<alloc|hashbrown::raw|Vec<T,A>::reserve|Vec<T>::with_capacity|box_new|Box<T>::new|"
                   r"exchange_malloc|Arc<T>::new|core::ptr|BytesMut::reserve|with_capacity)")


def site(ftbl, fs, depth=2):
    """The first `depth` frames of an allocation stack that are not the
    allocator itself."""
    frames = [ftbl[i] for i in fs]
    useful = [f for f in frames if not ALLOC.search(f) and f != "[root]"]
    out = []
    for f in useful[:depth]:
        m = re.match(r"0x[0-9A-Fa-f]+: (.*?)(?: \((.*)\))?$", f)
        name, loc = (m.group(1), m.group(2)) if m else (f, None)
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)
        if loc:
            loc = re.sub(r".*/(registry/src/[^/]+/|rustc/[0-9a-f]+/library/|work/[^/]+/)", "", loc)
        out.append(f"{name}" + (f" [{loc}]" if loc else ""))
    return " <- ".join(out) if out else "(allocator only)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--sybench", required=True)
    ap.add_argument("--steps", default="perf,strace,callgrind,dhat,idle")
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
    path.write_text(json.dumps(prev, indent=1))
    print(json.dumps(pr.summary, indent=1))


if __name__ == "__main__":
    main()
