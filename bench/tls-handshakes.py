#!/usr/bin/env python3
"""TLS handshake load: every request on a new TCP connection and a full TLS
handshake, closed loop, for the `tls-handshake` scenario of bench/harness.py.

    tls-handshakes.py --port 21113 --conns 64 --duration 5

`conns` connections are in flight at any time; each connects, does a full
handshake (no session is ever offered for resumption: the client keeps none),
sends one `GET PATH HTTP/1.1` with `Connection: close`, reads the response and
closes, and its slot starts the next one. No connection starts after
`duration`; those in flight get 5 s more to finish. Prints one JSON line like
wrk-report.lua's (latencies in microseconds, connect to last response byte),
with the handshakes completed and how many of them the server reports as
resumed (`session_reused`; must be 0).

wrk and h2load do not fit: on reconnecting they keep the TLS session and
resume it (HAProxy's stats count nearly every handshake as reused), so they
measure resumption, not full handshakes.

Standard library only.
"""

import argparse
import errno
import json
import math
import selectors
import socket
import ssl
import time

PCTS = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]


class Conn:
    __slots__ = ("sock", "state", "t0", "buf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    a = ap.parse_args()

    # Like wrk and h2load: no certificate verification (the handshake still
    # checks the server's signature), ALPN http/1.1, the library's defaults
    # for versions, groups and ciphers.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    request = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
               "Connection: close\r\n\r\n").encode()

    sel = selectors.DefaultSelector()
    lat = []
    handshakes = resumed = 0
    errors = {"connect": 0, "tls": 0, "write": 0, "read": 0, "status": 0, "timeout": 0}
    first_error = None
    proto = None

    def fail(c, kind, exc=None):
        nonlocal first_error
        errors[kind] += 1
        if first_error is None:
            first_error = f"{kind}: {exc!r}" if exc is not None else kind
        close(c)

    def close(c):
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        live.discard(c)

    def start():
        c = Conn()
        c.t0 = time.perf_counter()
        c.buf = b""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((a.host, a.port))
        c.sock, c.state = s, "connect"
        live.add(c)
        if err not in (0, errno.EINPROGRESS):
            fail(c, "connect", OSError(err, "connect"))
            return False
        sel.register(s, selectors.EVENT_WRITE, c)
        return True

    def want(c, events):
        sel.modify(c.sock, events, c)

    def handshake(c):
        nonlocal handshakes, resumed, proto
        try:
            c.sock.do_handshake()
        except ssl.SSLWantReadError:
            return want(c, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            return want(c, selectors.EVENT_WRITE)
        except (ssl.SSLError, OSError) as e:
            return fail(c, "tls", e)
        handshakes += 1
        if c.sock.session_reused:
            resumed += 1
        if proto is None:
            proto = f"{c.sock.version()} {c.sock.cipher()[0]}"
        try:
            c.sock.send(request)  # small: fits the empty send buffer
        except (ssl.SSLError, OSError) as e:
            return fail(c, "write", e)
        c.state = "read"
        want(c, selectors.EVENT_READ)
        read(c)

    def read(c):
        while True:
            try:
                chunk = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except ssl.SSLZeroReturnError:
                chunk = b""
            except (ssl.SSLError, OSError) as e:
                return fail(c, "read", e)
            c.buf += chunk
            head, sep, body = c.buf.partition(b"\r\n\r\n")
            length = None
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
            if (sep and length is not None and len(body) >= length) or not chunk:
                if not c.buf.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    return fail(c, "status" if sep else "read", c.buf[:40] if c.buf else None)
                lat.append((time.perf_counter() - c.t0) * 1e6)
                close(c)
                return

    live = set()
    t_start = time.perf_counter()
    stop_at = t_start + a.duration
    hard_stop = stop_at + 5.0
    for _ in range(a.conns):
        start()
    while live:
        now = time.perf_counter()
        if now > hard_stop:
            for c in list(live):
                fail(c, "timeout")
            break
        for key, _ in sel.select(timeout=0.1):
            c = key.data
            if c not in live:
                continue
            if c.state == "connect":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect", OSError(err, "connect"))
                    continue
                sel.unregister(c.sock)
                try:
                    c.sock = ctx.wrap_socket(c.sock, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as e:
                    fail(c, "tls", e)
                    continue
                sel.register(c.sock, selectors.EVENT_WRITE, c)
                c.state = "handshake"
                handshake(c)
            elif c.state == "handshake":
                handshake(c)
            else:
                read(c)
        if time.perf_counter() < stop_at:
            while len(live) < a.conns and start():
                pass
    # The measured interval ends when the last connection finished.
    elapsed = time.perf_counter() - t_start
    lat.sort()
    pct = []
    for q in PCTS:
        if lat:
            i = min(len(lat) - 1, max(0, math.ceil(q / 100 * len(lat)) - 1))
            pct.append([q, round(lat[i])])
    print(json.dumps({
        "tool": "tls-handshakes", "requests": len(lat), "handshakes": handshakes, "resumed": resumed,
        "duration_us": round(elapsed * 1e6), "errors": errors, "first_error": first_error,
        "protocol": proto, "percentiles": pct,
    }), flush=True)


if __name__ == "__main__":
    main()
