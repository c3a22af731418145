#!/usr/bin/env python3
"""End-to-end tests of vitq-server as a process, with Python clients and a real Prometheus.

Starts build/<preset>/tools/vitq-server on config/default.yaml (the shipped Fashion-MNIST models)
on free loopback ports, then:
  * the Python KServe client example and vitq-client classify the sample images correctly;
  * vitq-client's load mode gets an answer for every request;
  * KServe metadata / readiness and gRPC health answer;
  * a real Prometheus server (Debian package `prometheus`) scrapes /metrics and its HTTP API
    returns vitq_ series with the documented labels;
  * TLS and mutual TLS: plaintext and certificate-less clients are refused;
  * SIGTERM drains: every request sent before it is answered (OK, or UNAVAILABLE once draining
    began), none is lost or cut, and the process exits 0;
  * hot switch: 20 routing changes through `vitq-client admin` while `vitq-client load` runs at
    concurrency 16 fail no request; SIGHUP applies an edited config and refuses a broken one while
    the old routing keeps serving; admin calls without the token are UNAUTHENTICATED; labeled
    requests and Feedback show up in `vitq-client ab-report`.

  serving_e2e_test.py --server build/release/tools/vitq-server --client build/release/tools/vitq-client
                      [--prometheus /usr/bin/prometheus]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import kserve_client  # noqa: E402

ARGS = None
SAMPLES = os.path.join(ROOT, "config", "samples")


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """vitq-server on config/default.yaml (or `config`) with free ports; stop() sends SIGTERM.

    With `admin_token_file` the Admin service listens on a free port too (self.admin_address).
    """

    def __init__(self, extra_args=(), config=None, admin_token_file=None):
        admin = (["--admin-listen", "127.0.0.1:0", "--admin-token-file", admin_token_file]
                 if admin_token_file else [])
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [ARGS.server, "--config", config or os.path.join(ROOT, "config", "default.yaml"),
             "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *admin, *extra_args],
            # stderr goes to a file: a pipe nobody reads would block the server once it filled.
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.terminated = False
        self.admin_address = None
        self.address, self.metrics_port = self._read_ports(expect_admin=bool(admin))

    def _read_ports(self, expect_admin):
        address = metrics = None
        deadline = time.time() + 120
        while time.time() < deadline and (address is None or metrics is None or
                                          (expect_admin and self.admin_address is None)):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("vitq-server exited: " + self.stderr_text())
            if m := re.search(r"listening on (\S+)", line):
                address = m.group(1)
            if m := re.search(r"metrics on http://[^:]+:(\d+)/metrics", line):
                metrics = int(m.group(1))
            if m := re.search(r"admin on (\S+)", line):
                self.admin_address = m.group(1)
        return address, metrics

    def terminate(self):
        """Sends SIGTERM once (a second one would make the server exit at once, status 1)."""
        if not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc.stdout.close()
            self.log.close()

    def stderr_text(self):
        self.log.seek(0)
        return self.log.read()


class ServingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.generated = tempfile.TemporaryDirectory()
        cls.pb = kserve_client.load_messages(cls.generated.name)
        cls.server = Server()
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.client = kserve_client.KServeClient(cls.channel, cls.pb)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        cls.generated.cleanup()
        assert code == 0, f"vitq-server exited with {code}"

    def test_python_client_classifies_the_samples(self):
        paths = sorted(p for p in os.listdir(SAMPLES) if p.endswith(".png"))
        images = [read_file(os.path.join(SAMPLES, p)) for p in paths]
        variant, results = self.client.classify("fmnist-deit", "fp32", images, 3, 30)
        self.assertEqual(variant, "fp32")
        correct = 0
        for path, top in zip(paths, results):
            self.assertEqual(len(top), 3)
            self.assertGreaterEqual(top[0][1], top[1][1])
            truth = path[5:-4]  # "0000-ankle-boot.png" -> "ankle-boot"
            predicted = top[0][0].lower().replace("/", "-").replace(" ", "-")
            correct += predicted == truth
        # The model is 90.4% accurate on the test set; these ten are all classified right today.
        self.assertGreaterEqual(correct, 9, results)

    def test_kserve_metadata_and_readiness(self):
        self.assertTrue(self.client.server_ready(10))
        metadata = self.client.model_metadata("fmnist-deit", "", 10)
        self.assertEqual(set(metadata.versions), {"fp32", "w8a8", "w6a6", "w4a4", "qvit-w4a4", "qvit-w2a2"})
        self.assertEqual([t.name for t in metadata.inputs], ["image", "input"])
        self.assertEqual(list(metadata.inputs[1].shape), [-1, 1, 28, 28])
        with self.assertRaises(grpc.RpcError) as error:
            self.client.model_metadata("no-such-model", "", 10)
        self.assertEqual(error.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_kserve_bad_image_is_invalid_argument(self):
        with self.assertRaises(grpc.RpcError) as error:
            self.client.classify("fmnist-deit", "", [b"not an image"], 1, 10)
        self.assertEqual(error.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("decode", error.exception.details())

    def test_health_service(self):
        # grpc.health.v1.Health/Check: request {1: service}, response {1: status}; SERVING = 1.
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        for service in ["", "vitq.model.fmnist-deit"]:
            encoded = service.encode()
            response = check(b"\x0a" + bytes([len(encoded)]) + encoded if encoded else b"",
                             timeout=10)
            self.assertEqual(response, b"\x08\x01", service)
        with self.assertRaises(grpc.RpcError) as error:
            check(b"\x0a\x07unknown", timeout=10)
        self.assertEqual(error.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_cpp_client_classify(self):
        out = subprocess.run(
            [ARGS.client, "classify", "--address", self.server.address, "--model", "fmnist-deit",
             "--top-k", "2", os.path.join(SAMPLES, "0000-ankle-boot.png")],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        self.assertIn("Ankle boot (class 9)", lines[1])
        self.assertRegex(out.stdout, r"fmnist-deit/fp32")

    def test_cpp_client_load_answers_every_request(self):
        out = subprocess.run(
            [ARGS.client, "load", "--address", self.server.address, "--model", "fmnist-deit",
             "--tensor-shape", "1,28,28", "--api", "kserve", "--concurrency", "8",
             "--requests", "200", "--json"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        report = json.loads(out.stdout)
        self.assertEqual(report["sent"], 200)
        self.assertEqual(report["codes"], {"OK": 200})
        self.assertEqual(report["variants"], {"fp32": 200})
        self.assertGreater(report["latency_ms"]["p50"], 0)

    def test_cpp_client_reports_errors_with_their_code(self):
        out = subprocess.run(
            [ARGS.client, "classify", "--address", self.server.address, "--model", "nope",
             os.path.join(SAMPLES, "0000-ankle-boot.png")],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertIn("NOT_FOUND", out.stderr)
        self.assertIn("unknown model 'nope'", out.stderr)

    @unittest.skipUnless(shutil.which("prometheus") or os.path.exists("/usr/bin/prometheus"),
                         "needs the Debian package prometheus")
    def test_real_prometheus_scrapes_vitq_series(self):
        image = read_file(os.path.join(SAMPLES, "0000-ankle-boot.png"))
        for version in ["fp32", "w8a8"]:
            self.client.classify("fmnist-deit", version, [image], 1, 30)
        with tempfile.TemporaryDirectory() as work:
            port = free_port()
            config = os.path.join(work, "prometheus.yml")
            with open(config, "w") as f:
                f.write("global: {scrape_interval: 1s}\n"
                        "scrape_configs:\n"
                        "  - job_name: vitq\n"
                        f"    static_configs: [{{targets: ['127.0.0.1:{self.server.metrics_port}']}}]\n")
            prometheus = subprocess.Popen(
                [ARGS.prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                series = self._query_until_found(
                    port, 'vitq_requests_total{model="fmnist-deit",code="OK"}')
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=30)
        variants = {s["metric"]["variant"] for s in series}
        self.assertLessEqual({"fp32", "w8a8"}, variants)
        for s in series:
            self.assertEqual(s["metric"]["job"], "vitq")
            self.assertIn(s["metric"]["api"], {"kserve", "classify", "classify_stream"})
            self.assertGreater(float(s["value"][1]), 0)

    def _query_until_found(self, port, query, timeout_s=60):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    result = json.load(response)["data"]["result"]
                    if result and len({s["metric"]["variant"] for s in result}) >= 2:
                        return result
            except OSError:
                pass  # Prometheus still starting
            time.sleep(0.5)
        self.fail(f"Prometheus never returned {query}")


class DrainTest(unittest.TestCase):
    def test_sigterm_answers_every_request_and_exits_0(self):
        server = Server(["--drain-grace-s", "30"])
        with tempfile.TemporaryDirectory() as generated:
            pb = kserve_client.load_messages(generated)
            with grpc.insecure_channel(server.address) as channel:
                infer = channel.unary_unary(
                    "/inference.GRPCInferenceService/ModelInfer",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=pb.ModelInferResponse.FromString)
                request = pb.ModelInferRequest(model_name="fmnist-deit")
                tensor = request.inputs.add(name="input", datatype="FP32", shape=[32, 1, 28, 28])
                request.raw_input_contents.append(bytes(4 * 32 * 28 * 28))
                del tensor
                futures = [infer.future(request, timeout=120) for _ in range(100)]
                futures[0].result()  # the server is busy with the stream of requests
                server.terminate()
                codes = {}
                for f in futures:
                    try:
                        f.result()
                        code = "OK"
                    except grpc.RpcError as e:
                        code = e.code().name
                    codes[code] = codes.get(code, 0) + 1
        exit_code = server.stop()
        self.assertEqual(exit_code, 0)
        # Accepted requests finish; requests arriving after the drain began are refused cleanly.
        self.assertLessEqual(set(codes), {"OK", "UNAVAILABLE"}, codes)
        self.assertGreater(codes.get("OK", 0), 1, codes)


class StartUpTest(unittest.TestCase):
    def test_sigterm_while_loading_exits_at_once_with_0(self):
        # stderr is read line by line here, and the server exits right after: no pipe can fill.
        proc = subprocess.Popen(
            [ARGS.server, "--config", os.path.join(ROOT, "config", "default.yaml"),
             "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with proc:
            first = proc.stderr.readline()
            self.assertIn("loading model", first)  # start-up has begun and has variants left
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            rest = proc.stderr.read()
            self.assertEqual(code, 0, rest)
            self.assertIn("stop signal before serving", rest)
            self.assertNotIn("listening on", proc.stdout.read())


# The Fashion-MNIST class of each sample image (config/samples/README.md).
SAMPLE_CLASSES = {"0000-ankle-boot.png": 9, "0001-pullover.png": 2, "0002-trouser.png": 1,
                  "0004-shirt.png": 6, "0006-coat.png": 4, "0008-sandal.png": 5,
                  "0009-sneaker.png": 7, "0013-dress.png": 3, "0018-bag.png": 8,
                  "0019-t-shirt-top.png": 0}


class HotSwitchTest(unittest.TestCase):
    """The server on a copy of config/default.yaml (absolute model paths), with the Admin port."""

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.token = os.path.join(self.folder.name, "token")
        with open(self.token, "w") as f:
            f.write("e2e-secret\n")
        with open(os.path.join(ROOT, "config", "default.yaml")) as f:
            self.default_yaml = f.read().replace("../models/", os.path.join(ROOT, "models") + "/")
        self.config = os.path.join(self.folder.name, "config.yaml")
        self.write_config(self.default_yaml)
        self.server = Server(config=self.config, admin_token_file=self.token)

    def tearDown(self):
        code = self.server.stop()
        self.folder.cleanup()
        self.assertEqual(code, 0)

    def write_config(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def admin(self, *args, token=True, check=True):
        cmd = [ARGS.client, "admin", "--address", self.server.admin_address, "--json"]
        if token:
            cmd += ["--token-file", self.token]
        out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "VITQ_ADMIN_TOKEN"})
        if check:
            self.assertEqual(out.returncode, 0, out.stderr)
            return json.loads(out.stdout)
        return out

    def routing(self):
        return self.admin("get-routing", "--model", "fmnist-deit")

    def test_admin_without_the_token_is_unauthenticated(self):
        out = subprocess.run(
            [ARGS.client, "admin", "--address", self.server.admin_address, "list"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "VITQ_ADMIN_TOKEN": "wrong"})
        self.assertEqual(out.returncode, 1)
        self.assertIn("UNAUTHENTICATED", out.stderr)

    def test_twenty_switches_under_load_fail_no_request(self):
        load = subprocess.Popen(
            [ARGS.client, "load", "--address", self.server.address, "--model", "fmnist-deit",
             "--image", os.path.join(SAMPLES, "0001-pullover.png"), "--concurrency", "16",
             "--duration", "12", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rotation = ["fp32=1,w8a8=0,w4a4=0", "fp32=0,w8a8=1,w4a4=0", "fp32=0,w8a8=0,w4a4=1",
                    "fp32=1,w8a8=1,w4a4=1"]
        time.sleep(1)
        for i in range(20):
            table = self.admin("set-routing", "--model", "fmnist-deit", "--weights",
                               rotation[i % len(rotation)])
            self.assertEqual(int(table["generation"]), i + 2)
            time.sleep(0.4)
        out, err = load.communicate(timeout=120)
        self.assertEqual(load.returncode, 0, err)
        report = json.loads(out)
        self.assertEqual(report["codes"], {"OK": report["sent"]}, "a request failed during a switch")
        self.assertGreater(report["sent"], 200)
        self.assertEqual(set(report["variants"]), {"fp32", "w8a8", "w4a4"})

    def test_sighup_applies_the_config_and_refuses_a_broken_one(self):
        self.write_config(self.default_yaml.replace(
            "fmnist-deit.safetensors, weight: 1}", "fmnist-deit.safetensors, weight: 0}").replace(
            "fmnist-deit.w8a8.safetensors, weight: 0}", "fmnist-deit.w8a8.safetensors, weight: 1}"))
        self.server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60
        while int(self.routing()["generation"]) < 2 and time.time() < deadline:
            time.sleep(0.2)
        table = self.routing()
        self.assertEqual(int(table["generation"]), 2)
        self.assertEqual(table["weights"],
                         {"fp32": 0.0, "w8a8": 1.0, "w6a6": 0.0, "w4a4": 0.0, "qvit-w4a4": 0.0,
                          "qvit-w2a2": 0.0})
        self.assertEqual(table["shadow_variant"], "fp32")

        self.write_config(self.default_yaml.replace("w4a4.safetensors", "missing.safetensors"))
        self.server.proc.send_signal(signal.SIGHUP)
        out = self.admin("reload", check=False)  # the same reload through Admin: its error
        self.assertEqual(out.returncode, 1)
        self.assertIn("missing.safetensors", out.stderr)
        self.assertEqual(int(self.routing()["generation"]), 2)
        classify = subprocess.run(
            [ARGS.client, "classify", "--address", self.server.address, "--model", "fmnist-deit",
             os.path.join(SAMPLES, "0000-ankle-boot.png")], capture_output=True, text=True, timeout=60)
        self.assertEqual(classify.returncode, 0, classify.stderr)
        self.assertIn("fmnist-deit/w8a8", classify.stdout)

    def test_labels_and_feedback_reach_the_ab_report(self):
        files = sorted(SAMPLE_CLASSES)
        labels = [arg for f in files for arg in ("--label", str(SAMPLE_CLASSES[f]))]
        for variant in ["fp32", "w8a8"]:
            out = subprocess.run(
                [ARGS.client, "classify", "--address", self.server.address, "--model", "fmnist-deit",
                 "--variant", variant, *labels, *[os.path.join(SAMPLES, f) for f in files]],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
        out = subprocess.run(
            [ARGS.client, "classify", "--address", self.server.address, "--model", "fmnist-deit",
             "--variant", "w4a4", os.path.join(SAMPLES, "0002-trouser.png")],
            capture_output=True, text=True, timeout=60)
        match = re.search(r"id (\S+)", out.stdout)
        self.assertIsNotNone(match, f"no request id in the answer: {out.stdout!r} {out.stderr!r}")
        request_id = match.group(1)
        feedback = subprocess.run(
            [ARGS.client, "feedback", "--address", self.server.address, "--request-id", request_id,
             "--label", "Trouser"], capture_output=True, text=True, timeout=60)
        self.assertEqual(feedback.returncode, 0, feedback.stderr)
        self.assertIn("fmnist-deit/w4a4 was right", feedback.stdout)
        stats = {v["variant"]: v for v in self.admin("stats", "--model", "fmnist-deit")["variants"]}
        self.assertEqual(int(stats["fp32"]["labeled"]), 10)
        self.assertEqual(int(stats["fp32"]["labeled_correct"]), 10)  # the samples are easy ones
        self.assertEqual(int(stats["w8a8"]["labeled"]), 10)
        self.assertEqual(int(stats["w4a4"]["labeled"]), 1)
        report = subprocess.run(
            [ARGS.client, "ab-report", "--address", self.server.admin_address, "--token-file",
             self.token, "--model", "fmnist-deit"], capture_output=True, text=True, timeout=60)
        self.assertEqual(report.returncode, 0, report.stderr)
        self.assertIn("A/B report: fmnist-deit (shadow reference: fp32)", report.stdout)
        self.assertIn("100.0% [72.2, 100.0] (10)", report.stdout)


def make_certificate(folder, name):
    """A self-signed certificate (CA:TRUE, so it also signs itself as a client CA) for 127.0.0.1."""
    cert, key = os.path.join(folder, name + ".pem"), os.path.join(folder, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class TlsTest(unittest.TestCase):
    def ready(self, server, credentials):
        with grpc.secure_channel(server.address, credentials) as channel:
            ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
            return ready(b"", timeout=20)

    def test_tls_and_mutual_tls(self):
        with tempfile.TemporaryDirectory() as folder:
            server_cert, server_key = make_certificate(folder, "server")
            client_cert, client_key = make_certificate(folder, "client")
            root = read_file(server_cert)
            server = Server(["--tls-cert", server_cert, "--tls-key", server_key])
            try:
                self.assertEqual(self.ready(server, grpc.ssl_channel_credentials(root)), b"\x08\x01")
                with grpc.insecure_channel(server.address) as plaintext:
                    with self.assertRaises(grpc.RpcError):
                        plaintext.unary_unary("/inference.GRPCInferenceService/ServerReady")(
                            b"", timeout=5)
            finally:
                self.assertEqual(server.stop(), 0)
            server = Server(["--tls-cert", server_cert, "--tls-key", server_key,
                             "--tls-client-ca", client_cert])
            try:
                with self.assertRaises(grpc.RpcError):  # no client certificate
                    self.ready(server, grpc.ssl_channel_credentials(root))
                mutual = grpc.ssl_channel_credentials(root, read_file(client_key),
                                                      read_file(client_cert))
                self.assertEqual(self.ready(server, mutual), b"\x08\x01")
            finally:
                self.assertEqual(server.stop(), 0)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="vitq-server binary")
    parser.add_argument("--client", required=True, help="vitq-client binary")
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
