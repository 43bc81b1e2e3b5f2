#!/usr/bin/env python3
"""A grpcio conformance client for the Switchyard Echo test service.

Usage: grpc_echo_client.py TARGET [--scenario conformance|long-streams|unary-calls]

Runs a unary call with a 4 MiB payload, a client stream, a server stream of
50 replies, a bidi stream of 20 messages, a unary call that must fail with
INVALID_ARGUMENT and its message, and a server stream that must fail after
its replies (status in trailers after data). Prints one JSON summary line on
stdout; exits 1 if any check failed.

--scenario long-streams: a server stream, a client stream and a bidi stream
of --messages messages --interval-ms apart (so they outlive a short route
timeout), each with the deadline --deadline (seconds; 0: none).
--scenario unary-calls: --calls unary calls; reports how many failed, by code.
"""

import argparse
import json
import os
import sys
import time

import grpc

import echo_stubs

FAIL_MESSAGE = "switchyard test: invalid argument on purpose"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("--timeout", type=float, default=30.0, help="per call, seconds")
    parser.add_argument("--proto-root", default=echo_stubs.PROTO_ROOT)
    parser.add_argument("--scenario", default="conformance")
    parser.add_argument("--messages", type=int, default=8)
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--deadline", type=float, default=0.0)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--ca", help="PEM bundle: connect over TLS, trusting it")
    parser.add_argument("--server-name", help="with --ca: the name the certificate must carry")
    args = parser.parse_args()

    echo_pb2, echo_pb2_grpc = echo_stubs.load(args.proto_root)
    Req = echo_pb2.EchoRequest
    timeout = args.timeout
    servers = set()
    checks = {}

    def expect(cond, what):
        if not cond:
            raise AssertionError(what)

    def unary_large(stub):
        payload = os.urandom(4 * 1024 * 1024)
        reply = stub.Unary(Req(message="large", payload=payload), timeout=timeout)
        servers.add(reply.server)
        expect(reply.message == "large", f"message {reply.message!r}")
        expect(reply.payload == payload, f"payload of {len(reply.payload)} bytes differs")
        return {"payload_bytes": len(reply.payload)}

    def client_stream(stub):
        requests = [Req(message=f"m{i}", payload=bytes([i]) * 1000) for i in range(10)]
        reply = stub.ClientStream(iter(requests), timeout=timeout)
        servers.add(reply.server)
        expect(reply.index == 10, f"count {reply.index}")
        expect(reply.message == "".join(f"m{i}" for i in range(10)), f"message {reply.message!r}")
        expect(reply.payload == b"".join(r.payload for r in requests), "payload differs")
        return {"messages": reply.index}

    def server_stream(stub):
        replies = list(stub.ServerStream(Req(message="s", count=50), timeout=timeout))
        for reply in replies:
            servers.add(reply.server)
        expect(len(replies) == 50, f"{len(replies)} replies")
        expect([r.index for r in replies] == list(range(50)), "indices out of order")
        return {"replies": len(replies)}

    def bidi(stub):
        requests = [Req(message=f"b{i}") for i in range(20)]
        replies = list(stub.Bidi(iter(requests), timeout=timeout))
        for reply in replies:
            servers.add(reply.server)
        expect(len(replies) == 20, f"{len(replies)} replies")
        for i, reply in enumerate(replies):
            expect(reply.index == i and reply.message == f"b{i}", f"reply {i}: {reply}")
        return {"replies": len(replies)}

    def failing_unary(stub):
        code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        try:
            stub.Unary(Req(message="fail", fail_code=code, fail_message=FAIL_MESSAGE), timeout=timeout)
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"code {err.code()}")
            expect(err.details() == FAIL_MESSAGE, f"details {err.details()!r}")
            return {"code": err.code().name, "details": err.details()}
        raise AssertionError("the call succeeded")

    def failing_server_stream(stub):
        code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
        received = []
        try:
            call = stub.ServerStream(
                Req(message="f", count=3, fail_code=code, fail_message="after three"), timeout=timeout
            )
            for reply in call:
                received.append(reply.index)
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"code {err.code()}")
            expect(err.details() == "after three", f"details {err.details()!r}")
            expect(received == [0, 1, 2], f"received {received}")
            return {"code": err.code().name, "replies_before_status": len(received)}
        raise AssertionError("the stream succeeded")

    n, pause = args.messages, args.interval_ms / 1000.0
    stream_deadline = args.deadline or None

    def paced(prefix):
        for i in range(n):
            if i:
                time.sleep(pause)
            yield Req(message=f"{prefix}{i}")

    def long_server_stream(stub):
        call = stub.ServerStream(
            Req(message="ls", count=n, delay_ms=args.interval_ms), timeout=stream_deadline
        )
        replies = [r.index for r in call]
        expect(replies == list(range(n)), f"replies {replies}")
        return {"replies": len(replies)}

    def long_client_stream(stub):
        reply = stub.ClientStream(paced("lc"), timeout=stream_deadline)
        expect(reply.index == n, f"count {reply.index}")
        return {"messages": reply.index}

    def long_bidi(stub):
        replies = [r.index for r in stub.Bidi(paced("lb"), timeout=stream_deadline)]
        expect(replies == list(range(n)), f"replies {replies}")
        return {"replies": len(replies)}

    def unary_calls(stub):
        failed = {}
        for i in range(args.calls):
            try:
                reply = stub.Unary(Req(message=f"u{i}"), timeout=timeout)
                servers.add(reply.server)
            except grpc.RpcError as err:
                failed[err.code().name] = failed.get(err.code().name, 0) + 1
        expect(not failed, f"failed calls by code: {failed}")
        return {"calls": args.calls, "failed": failed}

    scenarios = {
        "conformance": [
            ("unary_4mib", unary_large),
            ("client_stream", client_stream),
            ("server_stream", server_stream),
            ("bidi", bidi),
            ("failing_unary", failing_unary),
            ("failing_server_stream", failing_server_stream),
        ],
        "long-streams": [
            ("server_stream", long_server_stream),
            ("client_stream", long_client_stream),
            ("bidi", long_bidi),
        ],
        "unary-calls": [("unary_calls", unary_calls)],
    }

    if args.ca:
        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = list(echo_stubs.CHANNEL_OPTIONS)
        if args.server_name:
            options.append(("grpc.ssl_target_name_override", args.server_name))
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=echo_stubs.CHANNEL_OPTIONS)
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for name, check in scenarios[args.scenario]:
            try:
                checks[name] = {"ok": True, **check(stub)}
            except Exception as err:  # noqa: BLE001 - every failure goes in the summary
                checks[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}

    ok = all(c["ok"] for c in checks.values())
    summary = {"target": args.target, "ok": ok, "servers": sorted(servers), "checks": checks}
    print(json.dumps(summary), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
