#!/usr/bin/env python3
"""The Switchyard Echo test service implemented with grpcio.

A third-party gRPC server for proxy tests; its semantics mirror the Rust
implementation (switchyard-test-support, src/grpc.rs):
  - fail_code != 0: fail with that code and fail_message (ServerStream: after
    the `count` replies; ClientStream/Bidi: when that request is read);
  - delay_ms: sleep before answering and before each streamed reply;
  - every reply carries the server's name in `server`.

With --fail-code N every call fails at once with status N (a trailers-only
answer), like an instance that is shutting down or overloaded.

Prints "LISTENING <port>" on stdout once bound, then serves until killed.
"""

import argparse
import sys
import time
from concurrent import futures

import grpc

import echo_stubs


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="py-grpc", help="reported in EchoReply.server")
    parser.add_argument("--proto-root", default=echo_stubs.PROTO_ROOT)
    parser.add_argument("--fail-code", type=int, default=0, help="fail every call with this code")
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate chain")
    parser.add_argument("--tls-key", help="and this PEM private key")
    args = parser.parse_args()

    echo_pb2, echo_pb2_grpc = echo_stubs.load(args.proto_root)

    def reply(request, index):
        return echo_pb2.EchoReply(
            message=request.message, payload=request.payload, index=index, server=args.name
        )

    def delay(request):
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000.0)

    def fail_if_asked(request, context):
        if args.fail_code:
            context.abort(echo_stubs.status_code(args.fail_code), f"{args.name} is failing")
        if request.fail_code:
            # abort() raises, ending the call with this status.
            context.abort(echo_stubs.status_code(request.fail_code), request.fail_message)

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            delay(request)
            fail_if_asked(request, context)
            return reply(request, 0)

        def ClientStream(self, request_iterator, context):
            messages, payloads, count = [], [], 0
            for request in request_iterator:
                delay(request)
                fail_if_asked(request, context)
                messages.append(request.message)
                payloads.append(request.payload)
                count += 1
            return echo_pb2.EchoReply(
                message="".join(messages), payload=b"".join(payloads), index=count, server=args.name
            )

        def ServerStream(self, request, context):
            if args.fail_code:
                fail_if_asked(request, context)
            for index in range(request.count):
                delay(request)
                yield reply(request, index)
            fail_if_asked(request, context)

        def Bidi(self, request_iterator, context):
            for index, request in enumerate(request_iterator):
                delay(request)
                fail_if_asked(request, context)
                yield reply(request, index)

    # Streaming calls hold a worker thread each; leave room for concurrency tests.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64), options=echo_stubs.CHANNEL_OPTIONS
    )
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    if args.tls_cert:
        with open(args.tls_cert, "rb") as cert, open(args.tls_key, "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(f"{args.host}:{args.port}", credentials)
    else:
        port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"could not bind {args.host}:{args.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    server.start()
    print(f"LISTENING {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
