#!/usr/bin/env python3
"""Classify images with a vitq server over the Open Inference Protocol (KServe v2) gRPC API.

An example of calling vitq from Python with nothing but Debian packages: python3-grpcio and
python3-protobuf, plus protoc (protobuf-compiler) to generate the message classes from
proto/inference/grpc_service.proto at start-up. Any KServe v2 / Triton gRPC client works the
same way; this one shows the calls and our conventions (input "image" as BYTES, outputs
"labels" and "probabilities", model_version = variant).

  clients/python/kserve_client.py --address localhost:8001 --model fmnist-deit \
      config/samples/0000-ankle-boot.png
  clients/python/kserve_client.py --model fmnist-deit --version w8a8 --topk 3 IMAGE...
  clients/python/kserve_client.py --model fmnist-deit --metadata
  clients/python/kserve_client.py --ready

Exit status: 0 when every call succeeded, 1 otherwise (the gRPC status is printed).
"""
import argparse
import importlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
SERVICE = "inference.GRPCInferenceService"


def load_messages(out_dir):
    """Generates grpc_service_pb2 with protoc into out_dir and imports it."""
    protoc = shutil.which("protoc")
    if protoc is None:
        sys.exit("kserve_client: needs protoc (Debian package protobuf-compiler)")
    subprocess.run([protoc, f"-I{PROTO_DIR}", f"--python_out={out_dir}",
                    os.path.join(PROTO_DIR, "inference", "grpc_service.proto")], check=True)
    sys.path.insert(0, out_dir)
    return importlib.import_module("inference.grpc_service_pb2")


class KServeClient:
    """The four KServe v2 calls this example needs, as plain unary gRPC methods."""

    def __init__(self, channel, pb):
        self.pb = pb
        self._infer = self._method(channel, "ModelInfer", pb.ModelInferResponse)
        self._metadata = self._method(channel, "ModelMetadata", pb.ModelMetadataResponse)
        self._ready = self._method(channel, "ServerReady", pb.ServerReadyResponse)
        self._live = self._method(channel, "ServerLive", pb.ServerLiveResponse)

    @staticmethod
    def _method(channel, name, response_type):
        return channel.unary_unary(f"/{SERVICE}/{name}",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_type.FromString)

    def server_ready(self, timeout):
        return self._ready(self.pb.ServerReadyRequest(), timeout=timeout).ready

    def model_metadata(self, model, version, timeout):
        return self._metadata(self.pb.ModelMetadataRequest(name=model, version=version),
                              timeout=timeout)

    def classify(self, model, version, images, topk, timeout):
        """Returns (variant, [[(label, probability), ...] per image])."""
        pb = self.pb
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        request.parameters["topk"].int64_param = topk
        image = request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
        image.contents.bytes_contents.extend(images)
        request.outputs.add(name="labels")
        request.outputs.add(name="probabilities")
        response = self._infer(request, timeout=timeout)
        outputs = decode_outputs(response)
        labels, probabilities = outputs["labels"], outputs["probabilities"]
        classes = len(probabilities) // len(images)
        results = []
        for i in range(len(images)):
            row = sorted(probabilities[i * classes:(i + 1) * classes], reverse=True)
            names = labels[i * topk:(i + 1) * topk]
            results.append(list(zip(names, row)))
        return response.model_version, results


def decode_outputs(response):
    """Output tensors by name: FP32 as a list of floats, BYTES as a list of str. Handles both
    raw_output_contents (what vitq and Triton send) and typed contents."""
    outputs = {}
    for i, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if tensor.datatype == "FP32":
                outputs[tensor.name] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
            else:
                outputs[tensor.name] = split_raw_bytes(raw)
        elif tensor.datatype == "FP32":
            outputs[tensor.name] = list(tensor.contents.fp32_contents)
        else:
            outputs[tensor.name] = [b.decode() for b in tensor.contents.bytes_contents]
    return outputs


def split_raw_bytes(raw):
    """BYTES elements in raw form: each a 4-byte little-endian length, then the bytes."""
    items, pos = [], 0
    while pos < len(raw):
        (length,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + length].decode())
        pos += 4 + length
    return items


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="image files (JPEG, PNG, BMP, WebP)")
    p.add_argument("--address", default="localhost:8001", help="server HOST:PORT")
    p.add_argument("--model", default="fmnist-deit", help="model name")
    p.add_argument("--version", default="", help="variant (e.g. fp32, w8a8); empty: routed")
    p.add_argument("--topk", type=int, default=5, help="classes per image")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    p.add_argument("--metadata", action="store_true", help="print the model's metadata")
    p.add_argument("--ready", action="store_true", help="check that the server is ready")
    return p.parse_args(argv)


def run(args, client):
    if args.ready:
        ready = client.server_ready(args.timeout)
        print("ready" if ready else "not ready")
        return 0 if ready else 1
    if args.metadata:
        print(client.model_metadata(args.model, args.version, args.timeout))
        return 0
    if not args.images:
        print("kserve_client: no images given (see --help)", file=sys.stderr)
        return 2
    images = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                images.append(f.read())
        except OSError as e:
            print(f"kserve_client: error: {path}: {e.strerror}", file=sys.stderr)
            return 1
    variant, results = client.classify(args.model, args.version, images, args.topk, args.timeout)
    for path, top in zip(args.images, results):
        print(f"{path}  ({args.model}/{variant})")
        for label, probability in top:
            print(f"  {probability:.4f}  {label}")
    return 0


def main(argv):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as generated:
        pb = load_messages(generated)
        with grpc.insecure_channel(args.address) as channel:
            try:
                return run(args, KServeClient(channel, pb))
            except grpc.RpcError as e:
                print(f"kserve_client: error: {e.code().name}: {e.details()}", file=sys.stderr)
                return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
