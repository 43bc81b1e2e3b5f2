#!/usr/bin/env python3
"""Scale: the cost of a request and the memory as routes, clusters or endpoints grow.

    python3 bench/scale.py --switchyard BIN [--dimension routes|clusters|endpoints]
        [--sizes 1,100,1000,10000,100000] [--rounds 3] [--duration 5]

For each size N, Switchyard and HAProxy get a generated configuration, in
alternating order per round:

- `routes`: N host routes (`h0.example.com` … `h{N-1}.example.com`), all to
  one cluster of the nginx backend. Switchyard one route per host, HAProxy
  a map file (`use_backend %[req.hdr(host),lower,map_str(hosts.map)]`), the
  way its users carry many virtual hosts. Load goes to the last host, the
  worst case for a scan.
- `clusters`: N clusters (backends) of one endpoint each; one route (the
  default backend) to the nginx backend, which the load goes through, the
  other clusters idle, as in a mesh sidecar that knows every service.
- `endpoints`: one cluster (backend) of N endpoints, addresses on 127.0.0.2
  where nothing listens (no health checks, so all are active), and the load
  through a second cluster of the nginx backend. Memory per endpoint is
  that of endpoints a balancer holds, not of connections to them.

Measured per size and contender:

- start-up: from spawn to the listening port;
- memory: VmRSS and RssAnon one second after start, and again one second
  after the load ends (at least six seconds after start: the dashboard
  feed's five-second window is full), per unit against the smallest size;
- CPU per request: wrk (64 keep-alive connections) while the proxy's CPU
  ticks are counted, divided by the requests completed.

Placement as in harness.py: the proxy on core 0, nginx and wrk on core 1.
Writes bench/results/scale-DIMENSION.{json,md,svg} (CPU per request against
size, log scale).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BENCH, CONFIGS, HZ, LOAD_CORE, PROXY_CORE, Proc, cpu_ticks, log, port_free, wait_port  # noqa: E402

BACKEND_PORT = 21081
PORT = {"switchyard": 21150, "haproxy": 21151}
ADMIN_PORT = 21159


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def head_lines():
    return [
        "[admin]",
        f'listen = "127.0.0.1:{ADMIN_PORT}"',
        "",
        "[log]",
        'level = "error"',
        "access_log = false",
        "",
        "[[listeners]]",
        'name = "http"',
        f'listen = "127.0.0.1:{PORT["switchyard"]}"',
        'protocol = "http"',
        "",
    ]


def idle_addr(i):
    """An address where nothing listens (127.0.0.2, ports from 30000)."""
    return f"127.0.0.2:{30000 + i % 30000}" if i < 30000 else f"127.0.{2 + i // 30000}.1:{30000 + i % 30000}"


def switchyard_config(dimension, n, path):
    lines = head_lines()
    if dimension == "routes":
        for i in range(n):
            lines += ["  [[listeners.routes]]", f'  name = "r{i}"', f'  match = {{ host = "h{i}.example.com" }}',
                      '  cluster = "web"', ""]
    else:
        lines += ["  [[listeners.routes]]", '  name = "web"', '  cluster = "web"', ""]
    lines += ["[[clusters]]", 'name = "web"', f'discovery = {{ static = ["127.0.0.1:{BACKEND_PORT}"] }}', ""]
    if dimension == "clusters":
        for i in range(n - 1):
            lines += ["[[clusters]]", f'name = "c{i}"', f'discovery = {{ static = ["{idle_addr(i)}"] }}', ""]
    if dimension == "endpoints":
        addrs = ", ".join(f'"{idle_addr(i)}"' for i in range(n))
        lines += ["[[clusters]]", 'name = "big"', f"discovery = {{ static = [{addrs}] }}", ""]
    path.write_text("\n".join(lines))


def haproxy_config(dimension, n, path, map_path):
    if dimension == "routes":
        map_path.write_text("".join(f"h{i}.example.com web\n" for i in range(n)))
        frontend = f"    use_backend %[req.hdr(host),lower,map_str({map_path})]"
    else:
        frontend = "    default_backend web"
    extra = ""
    if dimension == "clusters":
        extra = "".join(f"\nbackend c{i}\n    server s1 {idle_addr(i)}\n" for i in range(n - 1))
    if dimension == "endpoints":
        extra = "\nbackend big\n" + "".join(f"    server s{i} {idle_addr(i)}\n" for i in range(n))
    path.write_text(f"""global
    nbthread 1
    maxconn 9990

defaults
    mode http
    timeout connect 1s
    timeout client 75s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend http
    bind 127.0.0.1:{PORT["haproxy"]}
{frontend}

backend web
    server s1 127.0.0.1:{BACKEND_PORT}
{extra}""")


def measure(contender, argv, n, dimension, duration, logs, cwd):
    t0 = time.monotonic()
    proc = Proc(f"{contender}-{n}", argv, PROXY_CORE, 0, logs, cwd=cwd)
    try:
        if not wait_port(PORT[contender], timeout=120):
            raise SystemExit(f"{contender} with {n} routes did not listen; log: {logs}/{contender}-{n}.log")
        startup = time.monotonic() - t0
        time.sleep(1.0)
        rss = status_kib(proc.pid, "VmRSS")
        anon = status_kib(proc.pid, "RssAnon")
        c0 = cpu_ticks(proc.pid)
        url = f"http://127.0.0.1:{PORT[contender]}/"
        host = f"h{n - 1}.example.com" if dimension == "routes" else "web.example.com"
        wrk = subprocess.run(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", f"-d{duration}s", "--timeout", "5s",
             "-H", f"Host: {host}", "-s", str(BENCH / "wrk-report.lua"), url],
            capture_output=True, text=True, check=False)
        cpu = cpu_ticks(proc.pid) - c0
        # Steady state: the feed's window is full, start-up garbage is
        # whatever the allocator kept.
        time.sleep(max(1.0, startup + 7.0 - (time.monotonic() - t0)))
        rss_after = status_kib(proc.pid, "VmRSS")
        anon_after = status_kib(proc.pid, "RssAnon")
        line = [l for l in wrk.stdout.splitlines() if l.startswith("{")]
        if not line:
            raise SystemExit(f"wrk printed no result for {contender} {n}: {wrk.stdout[-300:]} {wrk.stderr[-300:]}")
        d = json.loads(line[-1])
        errors = sum(d["errors"].values())
        reqs = d["requests"]
        return {
            "startup_s": startup,
            "rss_kib": rss,
            "anon_kib": anon,
            "rss_after_kib": rss_after,
            "anon_after_kib": anon_after,
            "requests": reqs,
            "errors": errors,
            "rps": reqs / (d["duration_us"] / 1e6),
            "cpu_us_per_req": cpu / HZ * 1e6 / reqs if reqs else None,
        }
    finally:
        proc.stop()


def svg(results, sizes, path, dimension):
    """CPU per request against the size, log-scale x."""
    import math
    w, h, pad = 640, 360, 50
    xs = [math.log10(s) for s in sizes]
    ymax = max(r["cpu_us_per_req"] for c in results.values() for r in c.values()) * 1.15
    def px(x):
        return pad + (x - xs[0]) / max(xs[-1] - xs[0], 1e-9) * (w - 2 * pad)
    def py(y):
        return h - pad - y / ymax * (h - 2 * pad)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle">CPU per request (µs) against {dimension} (log scale)</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>']
    for s, x in zip(sizes, xs):
        out.append(f'<text x="{px(x)}" y="{h - pad + 16}" text-anchor="middle">{s:,}</text>')
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<text x="{pad - 6}" y="{py(y) + 4}" text-anchor="end">{y:.0f}</text>')
    colors = {"switchyard": "#1f77b4", "haproxy": "#d62728"}
    for k, (c, rows) in enumerate(results.items()):
        pts = " ".join(f"{px(math.log10(s))},{py(rows[str(s)]['cpu_us_per_req'])}" for s in sizes)
        out.append(f'<polyline fill="none" stroke="{colors.get(c, "black")}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{w - pad - 90}" y="{pad + 16 * k}" fill="{colors.get(c, "black")}">{c}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--dimension", choices=["routes", "clusters", "endpoints"], default="routes")
    ap.add_argument("--sizes", default="1,100,1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--contenders", default="switchyard,haproxy")
    ap.add_argument("--out-dir", default=str(BENCH / "results"))
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    contenders = a.contenders.split(",")
    busy = [p for p in [BACKEND_PORT, ADMIN_PORT, *PORT.values()] if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy}")
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-scale."))
    os.chmod(scratch, 0o755)
    logs = scratch / "logs"
    logs.mkdir()
    for d in ("backend/tmp", "backend/data"):
        (scratch / d).mkdir(parents=True)
    os.chmod(scratch / "backend", 0o755)
    os.chmod(scratch / "backend/data", 0o755)
    (scratch / "backend/data/16k").write_bytes(b"x" * 16384)
    backend = Proc("backend-nginx", ["nginx", "-p", f"{scratch}/backend/", "-c", str(CONFIGS / "backend-nginx.conf"),
                                     "-e", "stderr"], LOAD_CORE, 0, logs)
    if not wait_port(BACKEND_PORT):
        raise SystemExit("the nginx backend did not start")
    samples = {c: {n: [] for n in sizes} for c in contenders}
    try:
        for n in sizes:
            cfg = scratch / f"switchyard-{n}.toml"
            switchyard_config(a.dimension, n, cfg)
            hcfg = scratch / f"haproxy-{n}.cfg"
            haproxy_config(a.dimension, n, hcfg, scratch / f"hosts-{n}.map")
            argv = {"switchyard": [a.switchyard, "proxy", "--config", str(cfg)],
                    "haproxy": ["haproxy", "-db", "-f", str(hcfg)]}
            for r in range(a.rounds):
                order = contenders if r % 2 == 0 else list(reversed(contenders))
                for c in order:
                    m = measure(c, argv[c], n, a.dimension, a.duration, logs, scratch)
                    log(f"{n:>6} {a.dimension} {c:<10} round {r}: {m['cpu_us_per_req']:.2f} µs/req, "
                        f"{m['rps']:.0f} req/s, anon {m['anon_kib'] / 1024:.1f} → {m['anon_after_kib'] / 1024:.1f} MiB, "
                        f"start {m['startup_s']:.2f} s")
                    samples[c][n].append(m)
    finally:
        backend.stop()
    med = lambda xs: statistics.median(xs)  # noqa: E731
    results = {}
    for c in contenders:
        results[c] = {}
        for n in sizes:
            ms = samples[c][n]
            results[c][str(n)] = {k: med([m[k] for m in ms]) for k in
                                  ("cpu_us_per_req", "rps", "rss_kib", "anon_kib", "rss_after_kib",
                                   "anon_after_kib", "startup_s")}
            results[c][str(n)]["errors"] = sum(m["errors"] for m in ms)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{a.dimension}"
    (out / f"{stem}.json").write_text(json.dumps({"dimension": a.dimension, "sizes": sizes, "rounds": a.rounds, "duration": a.duration,
                                                "results": results, "samples": {c: {str(n): v for n, v in s.items()}
                                                                                 for c, s in samples.items()}}, indent=1))
    svg(results, sizes, out / f"{stem}.svg", a.dimension)
    unit = a.dimension[:-1]
    md = [f"| {a.dimension} | contender | CPU µs/req | vs {sizes[0]:,} | req/s | RssAnon MiB at 1 s | per {unit} | "
          f"RssAnon MiB steady | per {unit} | VmRSS MiB steady | start-up s | errors |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for c in contenders:
            r, base = results[c][str(n)], results[c][str(sizes[0])]
            def per(key):
                return f"{(r[key] - base[key]) / (n - sizes[0]):.2f} KiB" if n > sizes[0] else ""
            md.append(f"| {n:,} | {c} | {r['cpu_us_per_req']:.2f} | {r['cpu_us_per_req'] / base['cpu_us_per_req']:.2f}× | "
                      f"{r['rps']:.0f} | {r['anon_kib'] / 1024:.1f} | {per('anon_kib')} | "
                      f"{r['anon_after_kib'] / 1024:.1f} | {per('anon_after_kib')} | {r['rss_after_kib'] / 1024:.1f} | "
                      f"{r['startup_s']:.2f} | {r['errors']} |")
    text = "\n".join(md)
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
