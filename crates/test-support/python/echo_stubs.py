"""Runtime code generation for the Switchyard Echo test service.

Both scripts compile ../proto/switchyard/test/v1/echo.proto with
grpc_tools.protoc into a temporary directory at start-up, so the Python peer
always speaks exactly the proto the Rust side was built from, and no
generated code is checked in.
"""

import os
import shutil
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
PROTO_FILE = "switchyard/test/v1/echo.proto"

# Same limit as the Rust side's MAX_MESSAGE_SIZE: multi-MiB messages are tested.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
]


def load(proto_root=PROTO_ROOT):
    """Generates and imports the stubs; returns (echo_pb2, echo_pb2_grpc)."""
    out = tempfile.mkdtemp(prefix="switchyard-echo-stubs-")
    try:
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                PROTO_FILE,
            ]
        )
        if rc != 0:
            raise SystemExit(f"grpc_tools.protoc failed with exit code {rc} on {PROTO_FILE}")
        sys.path.insert(0, out)
        from switchyard.test.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402

        return echo_pb2, echo_pb2_grpc
    finally:
        # The modules are loaded in memory now; the server is usually killed
        # with SIGKILL, so clean up here rather than at exit.
        if out in sys.path:
            sys.path.remove(out)
        shutil.rmtree(out, ignore_errors=True)


def status_code(number):
    """The grpc.StatusCode with this numeric value (UNKNOWN if out of range)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN
