"""Strata from Python over gRPC: create a topic, produce records, read them back.

The client code is generated from the repository's proto/ with grpcio-tools when the
script starts, so it always matches the broker it ships with. Needs
`pip install grpcio grpcio-tools grpcio-health-checking`.

    python docs/python/strata_example.py --broker 127.0.0.1:9292
    # a broker with TLS and client certificates (docs/security.md):
    python docs/python/strata_example.py --broker localhost:9292 \
        --ca ca.pem --cert client.pem --key client.key

Prints one JSON line per record read back.
"""

import argparse
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def generated_stubs():
    """Generates strata.v1's Python code into a temporary directory and imports it."""
    out = tempfile.mkdtemp(prefix="strata-stubs-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(PROTO, "strata", "v1", "strata.proto"),
    ]
    if protoc.main(args) != 0:
        sys.exit("generating the client from proto/ failed")
    sys.path.insert(0, out)
    from strata.v1 import strata_pb2, strata_pb2_grpc

    return strata_pb2, strata_pb2_grpc


def channel(args):
    if not args.ca:
        return grpc.insecure_channel(args.broker)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None,
    )
    return grpc.secure_channel(args.broker, credentials)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:9292")
    parser.add_argument("--topic", default="python-example")
    parser.add_argument("--ca", help="CA certificate (PEM): connect over TLS")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client key (PEM)")
    args = parser.parse_args()
    pb, rpc = generated_stubs()

    with channel(args) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="strata.v1.Strata"), timeout=10
        )
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            sys.exit(f"the broker is not serving: {health}")

        strata = rpc.StrataStub(ch)
        try:
            strata.CreateTopic(pb.CreateTopicRequest(name=args.topic, partitions=1), timeout=10)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        records = [
            pb.Record(key=b"k%d" % i, value=b"hello %d" % i, headers=[pb.Header(key="from", value=b"python")])
            for i in range(3)
        ]
        produced = strata.Produce(
            pb.ProduceRequest(topic=args.topic, partition=0, acks=pb.ACKS_ALL, records=records),
            timeout=10,
        )
        fetched = strata.Fetch(
            pb.FetchRequest(
                topic=args.topic,
                partition=0,
                offset=produced.base_offset,
                max_bytes=1 << 20,
                format=pb.FORMAT_RECORDS,
            ),
            timeout=10,
        )
        for r in fetched.records:
            print(
                json.dumps(
                    {
                        "offset": r.offset,
                        "key": r.key.decode(),
                        "value": r.value.decode(),
                        "headers": {h.key: h.value.decode() for h in r.headers},
                    }
                )
            )


if __name__ == "__main__":
    main()
