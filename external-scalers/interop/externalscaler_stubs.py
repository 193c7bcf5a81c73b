"""Generates and imports the Python gRPC stubs of KEDA's external scaler contract.

The stubs are made with grpcio-tools from `proto/externalscaler.proto` of this repository (the
same file the Rust side is generated from) into a fresh temporary folder at every start, so no
generated code is checked in and the stubs can never drift from the contract.

    from externalscaler_stubs import load
    pb, grpc_pb = load()   # externalscaler_pb2, externalscaler_pb2_grpc
"""

import importlib
import os
import sys
import tempfile

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "externalscaler.proto")


def load(proto=PROTO):
    """Compiles `proto` and returns the modules (externalscaler_pb2, externalscaler_pb2_grpc)."""
    from grpc_tools import protoc  # imported here so that a missing package fails with a clear message

    proto = os.path.abspath(proto)
    out = tempfile.mkdtemp(prefix="externalscaler-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{os.path.dirname(proto)}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.basename(proto),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {proto}")
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
