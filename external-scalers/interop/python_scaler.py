"""A small external scaler written in Python with grpcio, independent of the Rust SDK.

Serves KEDA's `externalscaler.ExternalScaler` with stubs that grpcio-tools generates at start from
`proto/externalscaler.proto`. For testing the operator's `external` and `external-push` triggers
against an implementation that shares no code with keda-rs.

- One metric, `py-queue`, target 5 (`targetSize` 5 and `targetSizeFloat` 5.0).
- Its value is read at every call from `--value-file` (a number; a missing or empty file is 0)
  or, without that option, from the environment variable `PY_SCALER_VALUE` (default 0).
  Sent as `metricValueFloat` and, rounded, as `metricValue`.
- IsActive: value > 0.
- StreamIsActive: sends `result: true` every second (`--stream-interval`) until the client goes
  away. With `--stream-follows-value` it sends `value > 0` instead.
- Every call is logged to stderr with the ScaledObject's namespace/name and the metadata.

Usage:
    python_scaler.py [--address 127.0.0.1:50051] [--value-file PATH] [--stream-interval 1.0]
                     [--stream-follows-value]

Prints `listening on HOST:PORT` (the bound port when 0 was asked for) on stdout once it serves.
Stops on SIGTERM or SIGINT.
"""

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from externalscaler_stubs import load

METRIC = "py-queue"
TARGET = 5


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="host:port to serve on")
    parser.add_argument("--value-file", help="file holding the metric value (read at every call)")
    parser.add_argument("--stream-interval", type=float, default=1.0, help="seconds between stream messages")
    parser.add_argument(
        "--stream-follows-value",
        action="store_true",
        help="stream `value > 0` instead of always `true`",
    )
    return parser.parse_args()


def main():
    args = parse_args()
    pb, grpc_pb = load()
    stop = threading.Event()

    def value():
        if args.value_file:
            try:
                with open(args.value_file, encoding="utf-8") as f:
                    text = f.read().strip()
            except FileNotFoundError:
                return 0.0
        else:
            text = os.environ.get("PY_SCALER_VALUE", "").strip()
        return float(text) if text else 0.0

    def log(rpc, request):
        metadata = dict(sorted(request.scalerMetadata.items()))
        print(f"{rpc} {request.namespace}/{request.name} {metadata}", file=sys.stderr, flush=True)

    class Scaler(grpc_pb.ExternalScalerServicer):
        def IsActive(self, request, context):
            log("IsActive", request)
            return pb.IsActiveResponse(result=value() > 0)

        def StreamIsActive(self, request, context):
            log("StreamIsActive", request)
            while context.is_active() and not stop.is_set():
                result = value() > 0 if args.stream_follows_value else True
                yield pb.IsActiveResponse(result=result)
                stop.wait(args.stream_interval)

        def GetMetricSpec(self, request, context):
            log("GetMetricSpec", request)
            return pb.GetMetricSpecResponse(
                metricSpecs=[pb.MetricSpec(metricName=METRIC, targetSize=TARGET, targetSizeFloat=float(TARGET))]
            )

        def GetMetrics(self, request, context):
            log("GetMetrics", request.scaledObjectRef)
            if request.metricName != METRIC:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no metric {request.metricName!r}")
            current = value()
            return pb.GetMetricsResponse(
                metricValues=[
                    pb.MetricValue(metricName=METRIC, metricValue=round(current), metricValueFloat=current)
                ]
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    grpc_pb.add_ExternalScalerServicer_to_server(Scaler(), server)
    host, _, _ = args.address.rpartition(":")
    port = server.add_insecure_port(args.address)
    if port == 0:
        sys.exit(f"cannot bind {args.address}")
    server.start()
    print(f"listening on {host}:{port}", flush=True)

    def shutdown(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
