#!/usr/bin/python3
"""Guards a shipped model (models/NAME.safetensors + card):

1. engine vs LibTorch: `vitq eval --logits-out` and `vitq-train predict` on the first N test images
   agree within 1e-3 (max abs logit difference) and on top-1 for >= 99.9% of the images;
2. accuracy: `vitq eval` on all 10,000 test images is within 0.5 point of the card's
   training.test_top1 (the first 1,000 images alone are not a fair sample: 92.2% vs 90.4% for
   fmnist-deit).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
import st  # noqa: E402


def card_top1(card_path):
    with open(card_path) as f:
        m = re.search(r"test_top1:\s*['\"]?([0-9.]+)", f.read())
    if not m:
        raise SystemExit("%s has no training.test_top1" % card_path)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vitq", required=True)
    ap.add_argument("--vitq-train", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--parity-images", type=int, default=1000)
    args = ap.parse_args()
    spec = "fashion-mnist:test:%d" % args.parity_images
    with tempfile.TemporaryDirectory() as tmp:
        torch_out, engine_out = os.path.join(tmp, "torch.safetensors"), os.path.join(tmp, "engine.safetensors")
        subprocess.run([args.vitq_train, "predict", "-m", args.model, "--data", spec, "-o", torch_out], check=True)
        subprocess.run([args.vitq, "eval", "--model", args.model, "--dataset", spec, "--logits-out", engine_out],
                       check=True, stdout=subprocess.DEVNULL)
        ref, got = st.load(torch_out)["logits"], st.load(engine_out)["logits"]
    err = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    print("parity: %d images, max_abs_err=%.3g, top1_agree=%.4f" % (len(ref), err, agree))
    ok = err <= 1e-3 and agree >= 0.999
    out = subprocess.run([args.vitq, "eval", "--model", args.model, "--dataset", "fashion-mnist:test"],
                         check=True, capture_output=True, text=True).stdout
    top1 = float(re.search(r"top1=([0-9.]+)", out).group(1))
    card = card_top1(os.path.splitext(args.model)[0] + ".yaml")
    print("accuracy: eval top1=%.4f on 10,000 images, card test_top1=%.4f" % (top1, card))
    ok = ok and abs(top1 - card) <= 0.005
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
