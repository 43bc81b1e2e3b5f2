#!/usr/bin/env python3
"""Discovery churn: a cluster of 10,000 endpoints that replaces 10 % of its
members every second, through the registry, under load.

    python3 bench/churn.py --switchyard BIN [--endpoints 10000] [--rate 0.10]
        [--balancers p2c-peak-ewma,ring-hash,maglev] [--rounds 3] [--duration 8]
        [--load big|web] [--rps 8000] [--sybench target/release/sybench]

Parts, all real processes on loopback:

- the registry (`switchyard registry`, embedded store in a scratch directory)
  holding the service `big`: N instances, permanent registrations, each the
  address of a real HTTP server (two nginx processes listening on
  N + 10 % ports of 127.0.0.1, half each, because of the descriptor limit);
- the proxy (`switchyard proxy`, the default configuration plus ports) with
  cluster `big` discovered from the registry (`discovery = { registry }`,
  delta blocking queries, as shipped) and the balancer under test, and a
  route to it; `--load web` routes the load to a second, static cluster of
  one endpoint instead, so that the figure holds only discovery's own cost
  and not the connections a new endpoint needs;
- the churn: every 100 ms a step alternately registers and deregisters
  rate × N / 5 instances (ten steps a second: rate × N members join and as
  many leave each second, the total moving between N and N + rate × N / 5),
  written by 32 concurrent clients, as instances come and go in a large
  deployment. A step starts when its time has come and the proxy shows the
  previous one, so a proxy that falls behind lowers the rate, which is
  reported, rather than steps overlapping;
- the load: `sybench load` (bench/tools), 64 keep-alive HTTP/1.1
  connections at a fixed offered rate (`--rps`, default 8,000 a second),
  the same in both modes: at saturation the churn's own work on the load
  core (the registry, this script) would lower the request rate, and a
  less busy proxy spends more CPU per request (fewer requests per wake-up),
  which would be counted against the churn. Ring-hash and Maglev hash a
  header (`x-user`) that takes 10,000 values.

Per balancer and round, static and churn alternate on a freshly started
proxy (4 s of warm-up load first, so that pooled upstream connections
exist):

- CPU per request: the proxy's CPU ticks over `--duration` seconds of load,
  divided by the requests completed; the churn figure against the static
  one of the same round;
- request latency p50/p99 from sybench (from each request's intended
  start, so stalls are not hidden);
- registry → routing: a poller reads the proxy's
  `/clusters?name=big&endpoints_limit=0` every 5 ms (in both modes, so its
  cost is in both figures); a step's latency runs from when its last write
  left the client to the first reading at which the proxy's endpoint count
  is the step's target;
- the discovery sets the proxy applied (`switchyard_discovery_updates_total`).

Placement: the proxy on core 0; nginx, sybench, the registry and this
script on core 1, this script's writers at nice 10 so that they do not
delay the registry, the load or the poller. Writes bench/results/churn.{json,md}.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BENCH, HZ, LOAD_CORE, PROXY_CORE, Proc, cpu_ticks, log, port_free, wait_port  # noqa: E402

PROXY_PORT = 21160
WEB_PORT = 21161
REGISTRY_PORT = 21168
ADMIN_PORT = 21169
FIRST_PORT = 21300  # endpoint ports: above the bench's own, below the ephemeral range
STEPS_PER_SECOND = 10
WRITERS = 32
# This script's writer threads run at a lower priority (nice) than the registry,
# nginx, the load generator and the poller that share the load core with
# them, so that writing the churn does not delay what is measured.
PRIORITY_DROP = 10



def nginx_config(ports, path, pid):
    listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=1024;" for p in ports)
    path.write_text(f"""worker_processes 1;
daemon off;
pid {pid};
error_log stderr crit;
worker_rlimit_nofile 19000;
events {{ worker_connections 18000; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {{
{listens}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")


def proxy_config(balance, load, path):
    hashed = 'hash = { header = "x-user" }\n' if balance in ("ring-hash", "maglev") else ""
    path.write_text(f"""[admin]
listen = "127.0.0.1:{ADMIN_PORT}"

[[listeners]]
name = "http"
listen = "127.0.0.1:{PROXY_PORT}"
protocol = "http"

  [[listeners.routes]]
  name = "all"
  cluster = "{load}"

[[clusters]]
name = "big"
balance = "{balance}"
{hashed}discovery = {{ registry = {{ url = "http://127.0.0.1:{REGISTRY_PORT}", service = "big" }} }}

[[clusters]]
name = "web"
discovery = {{ static = ["127.0.0.1:{WEB_PORT}"] }}
""")


class Writers:
    """Registry writes from WRITERS threads, each over its own keep-alive
    connection."""

    def __init__(self):
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(WRITERS)

    def _conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            # Linux niceness is per thread: only the writers are lowered.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRIORITY_DROP)
            c = self.local.c = socket.create_connection(("127.0.0.1", REGISTRY_PORT), timeout=10)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.buf = b""
        return c

    def _response(self, c):
        """Reads one response on the keep-alive connection; its status."""
        buf = self.local.buf
        while b"\r\n\r\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                raise OSError("registry closed the connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = c.recv(65536)
            if not chunk:
                raise OSError("registry closed the connection")
            rest += chunk
        self.local.buf = rest[length:]
        return status

    def _one(self, method, port):
        """One write, by hand over a raw keep-alive socket: http.client's
        per-request cost would make this script the bottleneck of the load
        core at 2,000 writes a second."""
        path = f"/v1/services/big/instances/ep-{port}"
        if method == "PUT":
            body = f'{{"address": "127.0.0.1:{port}"}}'.encode()
            req = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            req = f"DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for attempt in range(3):
            c = self._conn()
            try:
                c.sendall(req)
                status = self._response(c)
                if status >= 300:
                    raise SystemExit(f"registry answered {status} to {method} ep-{port}")
                return time.monotonic()
            except OSError:
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise

    def run(self, method, ports):
        """Writes every port; returns when the last write was sent and when
        the last acknowledgement came (the latest of each)."""
        sent, acked = [], []

        def one(p):
            sent.append(time.monotonic())
            acked.append(self._one(method, p))

        list(self.pool.map(one, ports))
        return max(sent), max(acked)


class Churn(threading.Thread):
    """Ten steps a second, alternately adding and removing `step` members.
    A step starts when its time comes and the proxy has shown the previous
    one, so a proxy that falls behind lowers the rate (reported) instead of
    steps overlapping."""

    def __init__(self, writers, members, free, step, poller):
        super().__init__(daemon=True)
        self.writers, self.members, self.free, self.step = writers, members, free, step
        self.poller = poller
        self.stop_at_remove = threading.Event()
        self.done = threading.Event()
        # (start, seconds from the last write leaving / from its
        # acknowledgement to the proxy showing the step)
        self.steps = []
        self.missed = 0

    def run(self):
        period = 1.0 / STEPS_PER_SECOND
        next_at = time.monotonic()
        adding = True
        while True:
            # Stops after a removal, so that the set is back to N.
            if adding and self.stop_at_remove.is_set():
                break
            start = time.monotonic()
            if adding:
                ports = [self.free.pop(0) for _ in range(self.step)]
                last, acked = self.writers.run("PUT", ports)
                self.members.extend(ports)
            else:
                ports = [self.members.pop(0) for _ in range(self.step)]
                last, acked = self.writers.run("DELETE", ports)
                self.free.extend(ports)
            seen = self.poller.wait_for(len(self.members), last, timeout=5.0)
            if seen is None:
                self.missed += 1
                seen = time.monotonic()
            self.steps.append((start, seen - last, max(0.0, seen - acked)))
            adding = not adding
            next_at = max(next_at + period, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.done.set()


def poll(latest, halt):
    """Reads the proxy's endpoint count of `big` every 5 ms into `latest`
    (time, count). A process of its own, so that the writers' threads do
    not delay its readings."""
    c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=5)
    while not halt.is_set():
        c.request("GET", "/clusters?name=big&endpoints_limit=0")
        n = json.loads(c.getresponse().read())["clusters"][0]["endpoints_total"]
        with latest.get_lock():
            latest[0], latest[1] = time.monotonic(), n
        time.sleep(0.005)
    c.close()


class Poller:
    """The proxy's endpoint count, read every 5 ms (in both modes, so that
    its cost is in both figures)."""

    def __init__(self):
        self.latest = multiprocessing.Array("d", [0.0, -1.0])
        self.halt = multiprocessing.Event()
        self.proc = multiprocessing.Process(target=poll, args=(self.latest, self.halt), daemon=True)

    def start(self):
        self.proc.start()

    def stop(self):
        self.halt.set()
        self.proc.join(10)

    def wait_for(self, total, after, timeout):
        """The time of the first reading after `after` that shows `total`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.latest.get_lock():
                t, n = self.latest[0], self.latest[1]
            if t >= after and int(n) == total:
                return t
            time.sleep(0.001)
        return None


def endpoints_total():
    c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=5)
    try:
        c.request("GET", "/clusters?name=big&endpoints_limit=0")
        return json.loads(c.getresponse().read())["clusters"][0]["endpoints_total"]
    finally:
        c.close()


def metric(name, labels):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=10)
    try:
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
    finally:
        c.close()
    return 0.0


def load(a, duration):
    r = subprocess.run(
        ["taskset", "-c", LOAD_CORE, a.sybench, "load", "--addr", f"127.0.0.1:{PROXY_PORT}", "--proto", "h1",
         "--conns", "64", "--rate", str(a.rps), "--duration", str(duration), "--key-header", "x-user",
         "--keys", "10000"],
        capture_output=True, text=True, check=False)
    line = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if not line:
        raise SystemExit(f"sybench printed no result: {r.stdout[-300:]} {r.stderr[-300:]}")
    return json.loads(line[-1])


def measure(a, balance, mode, writers, members, free, scratch, logs):
    cfg = scratch / f"switchyard-{balance}.toml"
    proxy_config(balance, a.load, cfg)
    proc = Proc(f"switchyard-{balance}-{mode}", [a.switchyard, "proxy", "--config", str(cfg)], PROXY_CORE, 0,
                logs, cwd=scratch)
    churn, poller = None, None
    try:
        if not wait_port(PROXY_PORT, timeout=60):
            raise SystemExit(f"the proxy did not listen; log: {proc.logfile.name}")
        deadline = time.monotonic() + 30
        while endpoints_total() != len(members):
            if time.monotonic() > deadline:
                raise SystemExit("the proxy did not discover the registry's instances")
            time.sleep(0.05)
        poller = Poller()
        poller.start()
        if mode == "churn":
            churn = Churn(writers, members, free, a.step, poller)
            churn.start()
        load(a, 4)  # warm-up: pooled upstream connections
        u0 = metric("switchyard_discovery_updates_total", 'cluster="big"')
        s0 = len(churn.steps) if churn else 0
        c0, t0 = cpu_ticks(proc.pid), time.monotonic()
        d = load(a, a.duration)
        cpu = cpu_ticks(proc.pid) - c0
        elapsed = time.monotonic() - t0
        updates_per_s = (metric("switchyard_discovery_updates_total", 'cluster="big"') - u0) / elapsed
        res = {
            "requests": d["requests"],
            "errors": d["errors"] + d["lost"],
            "rps": d["rps"],
            "cpu_us_per_req": cpu / HZ * 1e6 / d["requests"],
            "p50_ms": d["p50_us"] / 1000,
            "p99_ms": d["p99_us"] / 1000,
            "updates_per_s": updates_per_s,
        }
        if churn:
            churn.stop_at_remove.set()
            churn.done.wait(30)
            steps = [x for x in churn.steps if x[0] >= t0]
            lat = sorted(x[1] for x in steps)
            lat_acked = sorted(x[2] for x in steps)
            res.update({
                "steps": len(lat),
                "missed": churn.missed,
                # Each step adds or removes `step` members.
                "changes_per_s": (len(churn.steps) - s0) * a.step / elapsed,
                "propagation_p50_ms": lat[len(lat) // 2] * 1000,
                "propagation_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
                "propagation_max_ms": lat[-1] * 1000,
                "lat_ms": [x * 1000 for x in lat],
                "lat_acked_ms": [x * 1000 for x in lat_acked],
                "acked_p50_ms": lat_acked[len(lat_acked) // 2] * 1000,
                "acked_p99_ms": lat_acked[min(len(lat_acked) - 1, int(len(lat_acked) * 0.99))] * 1000,
                "acked_max_ms": lat_acked[-1] * 1000,
            })
        return res
    finally:
        if churn and churn.is_alive():
            churn.stop_at_remove.set()
            churn.done.wait(30)
        if poller:
            poller.stop()
        proc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=0.10, help="share of members replaced per second")
    ap.add_argument("--balancers", default="p2c-peak-ewma,ring-hash,maglev")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--load", choices=["big", "web"], default="big")
    ap.add_argument("--rps", type=int, default=8000, help="offered load, requests a second")
    ap.add_argument("--sybench", default=str(BENCH.parent / "target/release/sybench"))
    ap.add_argument("--out-dir", default=str(BENCH / "results"))
    a = ap.parse_args()
    a.step = max(1, round(a.rate * a.endpoints / (STEPS_PER_SECOND / 2)))
    pool = a.endpoints + 5 * a.step
    ports = list(range(FIRST_PORT, FIRST_PORT + pool))
    if ports[-1] >= 32768:
        raise SystemExit("too many endpoints for the port range below the ephemeral ports")
    busy = [p for p in [PROXY_PORT, WEB_PORT, REGISTRY_PORT, ADMIN_PORT] if not port_free(p)]
    busy += [p for p in ports if not port_free(p)][:5]
    if busy:
        raise SystemExit(f"ports in use: {busy}")
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-churn."))
    os.chmod(scratch, 0o755)
    logs = scratch / "logs"
    logs.mkdir()
    for d in ("tmp",):
        (scratch / d).mkdir()
    if not Path(a.sybench).exists():
        raise SystemExit(f"no {a.sybench}: cargo build --release --locked --manifest-path bench/tools/Cargo.toml "
                         "--target-dir target")
    procs = []
    try:
        half = len(ports) // 2
        for i, part in enumerate([ports[:half], ports[half:] + [WEB_PORT]]):
            conf = scratch / f"nginx-{i}.conf"
            nginx_config(part, conf, scratch / f"nginx-{i}.pid")
            procs.append(Proc(f"nginx-{i}", ["nginx", "-p", f"{scratch}/", "-c", str(conf), "-e", "stderr"],
                              LOAD_CORE, 0, logs))
        procs.append(Proc("registry", [a.switchyard, "registry", "--listen", f"127.0.0.1:{REGISTRY_PORT}",
                                       "--store", f"embedded:{scratch}/registry", "--log-level", "warn"],
                          LOAD_CORE, 0, logs))
        for p in (ports[0], ports[-1], WEB_PORT, REGISTRY_PORT):
            if not wait_port(p, timeout=60):
                raise SystemExit(f"port {p} did not listen; logs in {logs}")
        writers = Writers()
        members, free = ports[:a.endpoints], ports[a.endpoints:]
        t = time.monotonic()
        for i in range(0, len(members), 500):
            writers.run("PUT", members[i:i + 500])
        log(f"registered {len(members)} instances in {time.monotonic() - t:.1f} s; "
            f"churn: {a.step} added and removed in turn every {1000 // STEPS_PER_SECOND} ms")
        samples = {b: {"static": [], "churn": []} for b in a.balancers.split(",")}
        for r in range(a.rounds):
            for b in samples:
                for mode in (("static", "churn") if r % 2 == 0 else ("churn", "static")):
                    m = measure(a, b, mode, writers, members, free, scratch, logs)
                    extra = (f", {m['changes_per_s']:.0f} changes/s, registry→routing p50 {m['propagation_p50_ms']:.1f} "
                             f"p99 {m['propagation_p99_ms']:.1f} max {m['propagation_max_ms']:.1f} ms "
                             f"({m['missed']} not shown within 5 s, of {m['steps']})"
                             if mode == "churn" else "")
                    log(f"{b:<14} {mode:<6} round {r}: {m['cpu_us_per_req']:.2f} µs/req, {m['rps']:.0f} req/s, "
                        f"p99 {m['p99_ms']:.2f} ms, {m['errors']} errors, {m['updates_per_s']:.1f} sets/s{extra}")
                    samples[b][mode].append(m)
    finally:
        for p in reversed(procs):
            p.stop()
    med = statistics.median

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * p))]

    rows = ["| balancer | CPU µs/req static | churn | ratio (median of rounds) | req/s | "
            "request p99 ms static / churn | changes/s | sets applied/s | registry → routing from the write leaving: "
            "p50 / p99 / max ms | from its acknowledgement: p50 / p99 / max ms | steps | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for b, s in samples.items():
        st, ch = s["static"], s["churn"]
        ratio = med([c["cpu_us_per_req"] / x["cpu_us_per_req"] for x, c in zip(st, ch)])
        summary[b] = {"ratio": ratio, "static": st, "churn": ch}
        # Every step of every round, pooled.
        lat = [v for x in ch for v in x["lat_ms"]]
        acked = [v for x in ch for v in x["lat_acked_ms"]]
        rows.append(
            f"| {b} | {med([x['cpu_us_per_req'] for x in st]):.2f} | {med([x['cpu_us_per_req'] for x in ch]):.2f} | "
            f"**{ratio:.2f}×** | {med([x['rps'] for x in st + ch]):.0f} | "
            f"{med([x['p99_ms'] for x in st]):.2f} / {med([x['p99_ms'] for x in ch]):.2f} | "
            f"{med([x['changes_per_s'] for x in ch]):.0f} | {med([x['updates_per_s'] for x in ch]):.1f} | "
            f"{q(lat, 0.5):.1f} / **{q(lat, 0.99):.1f}** / {max(lat):.1f} | "
            f"{q(acked, 0.5):.1f} / **{q(acked, 0.99):.1f}** / {max(acked):.1f} | {sum(x['steps'] for x in ch)}"
            f"{' (' + str(sum(x['missed'] for x in ch)) + ' not shown)' if any(x['missed'] for x in ch) else ''} | "
            f"{sum(x['errors'] for x in st + ch)} |")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "churn" if a.load == "big" else "churn-web"
    (out / f"{stem}.json").write_text(json.dumps({"endpoints": a.endpoints, "rate": a.rate, "step": a.step,
                                                  "load": a.load, "rounds": a.rounds, "duration": a.duration,
                                                  "results": summary}, indent=1))
    text = "\n".join(rows)
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
