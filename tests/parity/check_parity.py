#!/usr/bin/python3
"""Runs `vitq run` on a parity fixture (see make_reference.py) and compares its logits
with PyTorch's float64 reference.

fp32 passes when max |Δlogit| <= 1e-3 and every image has the same top-1 class.
bf16 passes when max |Δlogit| <= 0.02·max|logit| + 0.01 (bf16 keeps 8 significand bits,
about 2-3 decimal digits: a 12-layer network accumulates ~1% relative error), cosine
similarity >= 0.999, and the same top-1 class for every image whose top-2 margin exceeds that
bound (a smaller margin is within bf16 noise).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

ARCH = {"deit_s": "deit_small", "swin_t": "swin_tiny"}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vitq", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--scheme", required=True)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    model = os.path.join(args.dir, "%s_%s.safetensors" % (args.case, args.scheme))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.safetensors")
        cmd = [args.vitq, "run", "--model", model, "--input", os.path.join(args.dir, args.case + "_input.safetensors"),
               "--output", out, "--precision", args.precision]
        if args.case in ARCH:
            cmd += ["--arch", ARCH[args.case]]
        subprocess.run(cmd, check=True)
        got = st.load(out)["logits"].astype(np.float64)
    ref = st.load(os.path.join(args.dir, args.case + "_logits.safetensors"))["logits"].astype(np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = np.abs(got - ref).max()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    same_top1 = got.argmax(1) == ref.argmax(1)
    print("%s/%s/%s: max_abs_err=%.3g min_cosine=%.6f top1_agree=%d/%d max|logit|=%.3g" % (
        args.case, args.scheme, args.precision, err, cos.min(), same_top1.sum(), len(ref), np.abs(ref).max()))
    if args.precision == "fp32":
        ok = err <= 1e-3 and same_top1.all()
    else:
        bound = 0.02 * np.abs(ref).max() + 0.01
        top2 = np.sort(ref, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 2 * bound
        ok = err <= bound and cos.min() >= 0.999 and same_top1[decisive].all()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
