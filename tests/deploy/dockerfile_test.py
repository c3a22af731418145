#!/usr/bin/env python3
"""Checks of deploy/Dockerfile that run without a container engine.

  * the build stage installs the package list scripts/bootstrap installs (one file for both);
  * the runtime stage runs as a numeric non-root user, carries OCI labels, has no HEALTHCHECK,
    and copies only paths that exist;
  * a container-less rehearsal: the runtime stage's ENTRYPOINT + CMD, with the image's paths
    mapped to this checkout and the ports to free loopback ones, starts, answers the gRPC health
    check SERVING, and drains to exit 0 on SIGTERM.

  dockerfile_test.py --server build/release/tools/vitq-server --client build/release/tools/vitq-client
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
ARGS = None


def stages():
    """The Dockerfile as {stage name: [instruction lines]}, continuation lines joined."""
    with open(DOCKERFILE) as f:
        text = f.read().replace("\\\n", " ")
    result, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            current = m.group(1)
            result[current] = []
        elif current:
            result[current].append(line)
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DockerfileTest(unittest.TestCase):
    def test_build_stage_installs_the_bootstrap_list(self):
        build = "\n".join(stages()["build"])
        self.assertIn("COPY scripts/packages/build.txt", build)
        self.assertRegex(build, r"apt-get install .*\$\(sed .*/tmp/packages.txt\)")
        with open(os.path.join(ROOT, "scripts", "bootstrap")) as f:
            bootstrap = f.read()
        self.assertIn("packages/build.txt", bootstrap)
        self.assertNotIn("PACKAGES=(", bootstrap, "a second package list in bootstrap")

    def test_runtime_stage_is_non_root_labelled_and_copies_what_exists(self):
        runtime = stages()["runtime"]
        users = [l.split()[1] for l in runtime if l.startswith("USER")]
        self.assertEqual(len(users), 1)
        uid = users[0].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0, users)
        self.assertFalse(any(l.startswith("HEALTHCHECK") for l in runtime))
        labels = " ".join(l for l in runtime if l.startswith("LABEL"))
        for key in ["title", "description", "version", "licenses"]:
            self.assertIn(f"org.opencontainers.image.{key}=", labels)
        for line in runtime:
            if line.startswith("COPY") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)
        with open(os.path.join(ROOT, "scripts", "packages", "runtime.txt")) as f:
            packages = f.read().splitlines()
        for package in packages:
            package = package.split("#")[0].strip()
            if package:
                self.assertRegex(package, r"^[a-z0-9][a-z0-9.+-]+$")

    def test_rehearsal_of_the_runtime_command_serves_and_drains(self):
        runtime = stages()["runtime"]
        entry = json.loads(next(l for l in runtime if l.startswith("ENTRYPOINT"))[len("ENTRYPOINT"):])
        cmd = json.loads(next(l for l in runtime if l.startswith("CMD"))[len("CMD"):])
        grpc_port, metrics_port = free_port(), free_port()
        argv = []
        for arg in entry + cmd:
            arg = arg.replace("/usr/local/bin/vitq-server", ARGS.server)
            arg = arg.replace("/opt/vitq/", ROOT + "/")
            arg = arg.replace("0.0.0.0:8001", f"127.0.0.1:{grpc_port}")
            arg = arg.replace("0.0.0.0:9090", f"127.0.0.1:{metrics_port}")
            argv.append(arg)
        self.assertEqual(argv[0], ARGS.server)
        # The server's output goes to a file (a pipe nobody reads could fill and block it) and is
        # shown when the rehearsal fails.
        with tempfile.TemporaryFile(mode="w+") as log:
            server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                healthy = self.wait_until_serving(server, grpc_port)
                self.assertIsNone(server.poll(), self.read(log))
                self.assertEqual(healthy.stdout.strip(), "SERVING", self.read(log))
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    code = server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                    self.fail("no exit 60 s after SIGTERM:\n" + self.read(log))
            self.assertEqual(code, 0, self.read(log))

    @staticmethod
    def wait_until_serving(server, grpc_port):
        """The last health answer: SERVING, or what it said when the server exited or 120 s passed."""
        deadline, healthy = time.time() + 120, None
        while time.time() < deadline:
            healthy = subprocess.run(
                [ARGS.client, "health", "--address", f"127.0.0.1:{grpc_port}",
                 "--connect-timeout-s", "1"], capture_output=True, text=True)
            if healthy.returncode == 0 or server.poll() is not None:
                break
            time.sleep(0.5)
        return healthy

    @staticmethod
    def read(log):
        log.seek(0)
        return log.read()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
