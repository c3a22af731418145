#!/usr/bin/env python3
"""The Helm chart (helm/vitq), rendered without Helm by tests/deploy/helmrender (Go text/template
+ sprig + Helm's include/tpl/required/toYaml/fail, values checked against values.schema.json),
for the default values and every example in helm/vitq/ci/:

  * every document is valid YAML with a known apiVersion/kind;
  * selectors (Deployment, Service, PDB, topology spread, NetworkPolicy, ServiceMonitor) match
    the pod / Service labels;
  * probes, Service targetPorts and NetworkPolicy ports name existing container ports;
  * resources and the restricted securityContext are set; termination grace exceeds the drain;
  * the rendered server config passes `vitq-server --check` (image paths mapped to this checkout);
  * the schema rejects bad values and `required` / `fail` stop bad combinations;
  * deploy/k8s/vitq.yaml is exactly the render of the defaults (VITQ_UPDATE_GOLDEN=1 rewrites it).

  helm_test.py --server build/release/tools/vitq-server --work-dir build/release/tests/deploy
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "vitq")
GOLDEN = os.path.join(ROOT, "deploy", "k8s", "vitq.yaml")
ARGS = None
RENDERER = None

KNOWN_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


def build_renderer():
    out = os.path.join(ARGS.work_dir, "helmrender")
    env = {**os.environ, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off", "GOFLAGS": "",
           "GOCACHE": os.path.join(ARGS.work_dir, "gocache"), "GOPROXY": "off"}
    subprocess.run(["go", "build", "-o", out, "."], check=True, env=env,
                   cwd=os.path.join(ROOT, "tests", "deploy", "helmrender"))
    return out


def render(*value_files, expect_ok=True):
    args = [RENDERER, "-chart", CHART]
    for f in value_files:
        args += ["-f", f]
    out = subprocess.run(args, capture_output=True, text=True)
    if expect_ok and out.returncode != 0:
        raise AssertionError(f"render failed: {out.stderr}")
    return out


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def value_sets():
    return [("defaults", [])] + [(os.path.basename(f), [f])
                                  for f in sorted(glob.glob(os.path.join(CHART, "ci", "*.yaml")))]


class ChartTest(unittest.TestCase):
    def check_render(self, docs):
        by_kind = {}
        for d in docs:
            self.assertIn((d["apiVersion"], d["kind"]), KNOWN_KINDS)
            self.assertTrue(d["metadata"]["name"])
            by_kind.setdefault(d["kind"], []).append(d)
        deployment = by_kind["Deployment"][0]
        pod = deployment["spec"]["template"]
        pod_labels = pod["metadata"]["labels"]
        self.assertTrue(matches(deployment["spec"]["selector"]["matchLabels"], pod_labels))
        container = pod["spec"]["containers"][0]
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
            spec = container[probe]
            if "grpc" in spec:
                self.assertIn(spec["grpc"]["port"], port_names.values(), probe)
            else:
                self.assertEqual(spec["exec"]["command"][1], "health", probe)
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            self.assertTrue(c["resources"]["requests"] and c["resources"]["limits"], c["name"])
            sc = c["securityContext"]
            self.assertFalse(sc["allowPrivilegeEscalation"])
            self.assertTrue(sc["readOnlyRootFilesystem"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertTrue(pod["spec"]["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(pod["spec"]["securityContext"]["runAsUser"], 0)
        for tsc in pod["spec"].get("topologySpreadConstraints", []):
            self.assertTrue(matches(tsc["labelSelector"]["matchLabels"], pod_labels))
        mounts = {m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"] for v in pod["spec"]["volumes"]}
        self.assertLessEqual(mounts, volumes)
        service = by_kind["Service"][0]
        self.assertTrue(matches(service["spec"]["selector"], pod_labels))
        for p in service["spec"]["ports"]:
            self.assertIn(p["targetPort"], port_names)
        for pdb in by_kind.get("PodDisruptionBudget", []):
            self.assertTrue(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels))
        for np in by_kind.get("NetworkPolicy", []):
            self.assertTrue(matches(np["spec"]["podSelector"]["matchLabels"], pod_labels))
            for rule in np["spec"]["ingress"]:
                for p in rule["ports"]:
                    self.assertIn(p["port"], port_names)
        for sm in by_kind.get("ServiceMonitor", []):
            self.assertTrue(matches(sm["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]))
            self.assertIn(sm["spec"]["endpoints"][0]["port"], [p["name"] for p in service["spec"]["ports"]])
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
            self.assertNotIn("replicas", deployment["spec"])
        config = yaml.safe_load(by_kind["ConfigMap"][0]["data"]["config.yaml"])
        self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], config["server"]["drain_grace_s"])
        return by_kind, config

    def check_config_with_server(self, config, label):
        """`vitq-server --check` on the rendered config, image and volume paths mapped here."""
        text = yaml.safe_dump(config).replace(": /opt/vitq/", f": {ROOT}/").replace(": /models/", f": {ROOT}/models/")
        text = text.replace("/etc/vitq/admin/token", self.token).replace("/etc/vitq/tls/", self.tls_dir + "/")
        path = os.path.join(self.tmp.name, f"{label}.yaml")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([ARGS.server, "--check", "--config", path], capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, f"{label}: {out.stderr}")
        self.assertIn("is valid", out.stdout)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.token = os.path.join(self.tmp.name, "token")
        with open(self.token, "w") as f:
            f.write("t0ken\n")
        self.tls_dir = os.path.join(self.tmp.name, "tls")
        os.mkdir(self.tls_dir)
        for name in ["tls.crt", "tls.key", "ca.crt"]:
            open(os.path.join(self.tls_dir, name), "w").write("PEM placeholder\n")

    def tearDown(self):
        self.tmp.cleanup()

    def test_every_value_set_renders_consistent_manifests(self):
        for label, files in value_sets():
            with self.subTest(values=label):
                by_kind, config = self.check_render(documents(render(*files).stdout))
                self.check_config_with_server(config, label)
                notes = subprocess.run([RENDERER, "-chart", CHART, "-notes"] +
                                       sum([["-f", f] for f in files], []), capture_output=True, text=True)
                self.assertEqual(notes.returncode, 0, notes.stderr)
                self.assertIn("vitq-client classify", notes.stdout)

    def test_examples_turn_on_what_they_say(self):
        ci = lambda name: os.path.join(CHART, "ci", name)
        kinds = lambda f: {d["kind"] for d in documents(render(ci(f)).stdout)}
        self.assertIn("HorizontalPodAutoscaler", kinds("hpa-custom-metric-values.yaml"))
        self.assertIn("ServiceMonitor", kinds("servicemonitor-values.yaml"))
        self.assertIn("NetworkPolicy", kinds("servicemonitor-values.yaml"))
        pvc = documents(render(ci("pvc-models-values.yaml")).stdout)
        deployment = next(d for d in pvc if d["kind"] == "Deployment")
        self.assertNotIn("checksum/config", deployment["spec"]["template"]["metadata"]["annotations"] or {})
        self.assertIn("Secret", {d["kind"] for d in pvc})
        config = yaml.safe_load(next(d for d in pvc if d["kind"] == "ConfigMap")["data"]["config.yaml"])
        self.assertTrue(config["server"]["watch_config"])
        tls = documents(render(ci("tls-values.yaml")).stdout)
        container = next(d for d in tls if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertIn("--tls-cert", container["readinessProbe"]["exec"]["command"])
        hpa = next(d for d in documents(render(ci("hpa-custom-metric-values.yaml")).stdout)
                   if d["kind"] == "HorizontalPodAutoscaler")
        self.assertEqual(hpa["spec"]["metrics"][1]["pods"]["metric"]["name"], "vitq_queue_p90_seconds")

    def test_a_config_change_rolls_the_pods(self):
        base = documents(render().stdout)
        changed_values = os.path.join(self.tmp.name, "weights.yaml")
        with open(changed_values, "w") as f:
            yaml.safe_dump({"models": [{"name": "m", "variants": [
                {"name": "fp32", "path": "/opt/vitq/models/fmnist-deit.safetensors", "weight": 1}]}]}, f)
        changed = documents(render(changed_values).stdout)
        checksum = lambda docs: next(d for d in docs if d["kind"] == "Deployment")[
            "spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        self.assertNotEqual(checksum(base), checksum(changed))

    def test_bad_values_are_refused(self):
        cases = {
            "replicaCount: -1\n": "replicaCount",
            "config: {reload: sometimes}\n": "reload",
            "modelStorage: {type: s3}\n": "type",
            "server: {grpcPort: 70000}\n": "grpcPort",
            "replicas: 3\n": "replicas",  # a typo of replicaCount: unknown keys are refused
            "server: {admin: {enabled: true}}\n": "server.admin.token",
            "server: {tls: {enabled: true}}\n": "existingSecret",
            "terminationGracePeriodSeconds: 5\n": "terminationGracePeriodSeconds must exceed",
            "modelStorage: {type: pvc}\n": "claimName",
        }
        for text, phrase in cases.items():
            with self.subTest(values=text):
                path = os.path.join(self.tmp.name, "bad.yaml")
                with open(path, "w") as f:
                    f.write(text)
                out = render(path, expect_ok=False)
                self.assertEqual(out.returncode, 1, out.stdout[:200])
                self.assertIn(phrase, out.stderr)

    def test_plain_manifests_are_the_render_of_the_defaults(self):
        rendered = render().stdout
        header = ("# Rendered from helm/vitq with the default values (release vitq, namespace default)\n"
                  "# for users without Helm. Do not edit: VITQ_UPDATE_GOLDEN=1 ctest -R deploy.helm\n")
        if os.environ.get("VITQ_UPDATE_GOLDEN") == "1":
            os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
            with open(GOLDEN, "w") as f:
                f.write(header + rendered)
        with open(GOLDEN) as f:
            self.assertEqual(f.read(), header + rendered,
                             "deploy/k8s/vitq.yaml is stale: VITQ_UPDATE_GOLDEN=1 ctest -R deploy.helm")


def main():
    global ARGS, RENDERER
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--work-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    os.makedirs(ARGS.work_dir, exist_ok=True)
    RENDERER = build_renderer()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
