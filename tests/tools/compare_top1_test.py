"""scripts/compare-top1 on hand-made logits files: accuracies, discordant counts, exact p-value."""
import json
import struct
import subprocess
import sys
import tempfile
import unittest
from array import array
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare-top1"


def write_logits(path, predictions, labels, classes=3):
    logits = array("f")
    for p in predictions:
        logits.extend(1.0 if c == p else 0.0 for c in range(classes))
    label_bytes = bytes(labels)
    header = {
        "logits": {"dtype": "F32", "shape": [len(predictions), classes],
                   "data_offsets": [0, len(logits) * 4]},
        "labels": {"dtype": "U8", "shape": [len(labels)],
                   "data_offsets": [len(logits) * 4, len(logits) * 4 + len(label_bytes)]},
    }
    encoded = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + logits.tobytes() +
                           label_bytes)


class CompareTop1Test(unittest.TestCase):
    def run_script(self, *paths):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)],
                              capture_output=True, text=True)

    def compare(self, a, b, labels):
        """Runs the script on files of predictions a and b; fails unless it succeeds."""
        with tempfile.TemporaryDirectory() as d:
            write_logits(f"{d}/a", a, labels)
            write_logits(f"{d}/b", b, labels)
            out = self.run_script(f"{d}/a", f"{d}/b")
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def test_counts_and_exact_p_value(self):
        labels = [0, 1, 2, 0, 1, 2, 0, 1]
        # A right on all but the first five; B right on all: B alone right on 5, A alone on 0.
        a = [(l + 1) % 3 if i < 5 else l for i, l in enumerate(labels)]
        out = self.compare(a, labels, labels)
        self.assertIn("A top1=0.3750  B top1=1.0000  images=8", out)
        # Two-sided exact binomial: 2 · (1/2)^5 = 0.0625.
        self.assertIn("only A right=0  only B right=5  McNemar exact p=0.0625", out)

    def test_p_value_with_more_discordant_images_than_a_float_power_of_two_holds(self):
        # 700 images only A gets right, 500 only B: 2^1200 overflows a float.
        labels = [0] * 1200
        a = [0] * 700 + [1] * 500
        b = [1] * 700 + [0] * 500
        out = self.compare(a, b, labels)
        self.assertIn("only A right=700  only B right=500", out)
        p = float(out.split("McNemar exact p=")[1].split()[0])
        # Normal approximation: z = 200 / sqrt(1200) = 5.77, two-sided p ~ 7.8e-9.
        self.assertGreater(p, 1e-9)
        self.assertLess(p, 2e-8)

    def test_refuses_files_of_different_images(self):
        with tempfile.TemporaryDirectory() as d:
            write_logits(f"{d}/a", [0, 1], [0, 1])
            write_logits(f"{d}/b", [0, 1], [1, 1])
            out = self.run_script(f"{d}/a", f"{d}/b")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("not of the same images", out.stderr)


if __name__ == "__main__":
    unittest.main()
