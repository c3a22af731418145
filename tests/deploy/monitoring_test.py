#!/usr/bin/env python3
"""The Grafana dashboard and the Prometheus rules speak the server's metric names.

  * every `vitq_` name in deploy/grafana/*.json and deploy/prometheus/*.yaml is a series of
    docs/METRICS.md (with _bucket/_sum/_count for histograms), so a renamed metric fails here;
  * the dashboard is valid JSON with unique panel ids, a model variable, and a query per panel;
  * `promtool check rules` accepts the rules and `promtool test rules` passes their unit tests
    (alerts fire on synthetic series, and only where they should).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def documented_series():
    text = open(os.path.join(ROOT, "docs", "METRICS.md")).read()
    names = set()
    for name, kind in re.findall(r"^\| `(vitq_\w+)` \| (\w+)", text, re.M):
        names.add(name)
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


class MonitoringTest(unittest.TestCase):
    def test_every_metric_used_is_documented(self):
        known = documented_series()
        self.assertIn("vitq_requests_total", known)
        files = glob.glob(os.path.join(ROOT, "deploy", "grafana", "*.json")) + [
            f for f in glob.glob(os.path.join(ROOT, "deploy", "prometheus", "*.yaml"))
            if not f.endswith(".test.yaml")]
        self.assertTrue(files)
        for path in files:
            used = set(re.findall(r"\bvitq_[a-z_]+", open(path).read()))
            unknown = used - known
            self.assertFalse(unknown, f"{os.path.basename(path)} uses undocumented {sorted(unknown)}")

    def test_dashboard_structure(self):
        dash = json.load(open(os.path.join(ROOT, "deploy", "grafana", "vitq-dashboard.json")))
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertIn("model", [v["name"] for v in dash["templating"]["list"]])
        for p in dash["panels"]:
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertIn('model=~"$model"', t["expr"], p["title"])

    @unittest.skipUnless(shutil.which("promtool"), "needs promtool (Debian package prometheus)")
    def test_promtool_checks_and_unit_tests_pass(self):
        folder = os.path.join(ROOT, "deploy", "prometheus")
        check = subprocess.run(["promtool", "check", "rules", "vitq-alerts.yaml"], cwd=folder,
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        test = subprocess.run(["promtool", "test", "rules", "vitq-alerts.test.yaml"], cwd=folder,
                              capture_output=True, text=True)
        self.assertEqual(test.returncode, 0, test.stdout + test.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
