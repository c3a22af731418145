#!/usr/bin/python3
"""Writes torchvision reference inputs for the preprocessing parity tests.

For each case below, a real photograph shipped by Debian's python3-skimage goes
through the evaluation transform timm and torchvision use for DeiT/Swin:

    PIL.Image.open(path).convert(mode)          mode 'RGB' (3 channels) or 'L' (1)
    Resize(int(image_size / crop_pct), interpolation)
    CenterCrop(image_size)
    ToTensor()
    Normalize(mean, std)

and the float32 (C, H, W) result is written raw, little-endian, to
OUT_DIR/<case>.bin, with OUT_DIR/<case>.txt giving the photo and the options
(one "key value..." per line) for tests/preprocessing/parity_test.cc.

Usage: /usr/bin/python3 make_reference.py OUT_DIR [--photos DIR]
(Debian's interpreter: it has python3-torch and python3-torchvision.)
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

PHOTO_DIR = "/usr/lib/python3/dist-packages/skimage/data"
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
GRAY = dict(mean=[0.5], std=[0.5])

# name: (photo, mode, image_size, crop_pct, interpolation, normalization)
CASES = {
    # The DeiT/Swin default on every photograph: PNG and JPEG, portrait,
    # landscape and square, large (retina 1411 px) and gray (camera).
    "astronaut": ("astronaut.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "coffee": ("coffee.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "chelsea": ("chelsea.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "rocket": ("rocket.jpg", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "retina": ("retina.jpg", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "camera": ("camera.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "hubble_deep_field": ("hubble_deep_field.jpg", "RGB", 224, 0.875, "bicubic", IMAGENET),
    # RGBA (alpha dropped) and palette PNGs.
    "logo_rgba": ("logo.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    "green_palette": ("green_palette.png", "RGB", 224, 0.875, "bicubic", IMAGENET),
    # Swin's crop_pct, the bilinear filter, and an upscale (300 px -> 384 px).
    "coffee_swin_crop": ("coffee.png", "RGB", 224, 0.9, "bicubic", IMAGENET),
    "coffee_bilinear": ("coffee.png", "RGB", 224, 0.875, "bilinear", IMAGENET),
    "chelsea_upscale": ("chelsea.png", "RGB", 384, 1.0, "bicubic", IMAGENET),
    # 1-channel models (Fashion-MNIST size): PIL's RGB -> L luma, from PNG and JPEG.
    "chelsea_gray28": ("chelsea.png", "L", 28, 1.0, "bicubic", GRAY),
    "rocket_gray28": ("rocket.jpg", "L", 28, 1.0, "bicubic", GRAY),
}

INTERPOLATION = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
}


def reference(path, mode, image_size, crop_pct, interpolation, norm):
    transform = transforms.Compose([
        transforms.Resize(int(image_size / crop_pct), interpolation=INTERPOLATION[interpolation]),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(norm["mean"], norm["std"]),
    ])
    with Image.open(path) as image:
        return transform(image.convert(mode))


def write_case(out_dir, name, photo_dir, spec):
    photo, mode, image_size, crop_pct, interpolation, norm = spec
    path = os.path.join(photo_dir, photo)
    tensor = reference(path, mode, image_size, crop_pct, interpolation, norm)
    array = tensor.numpy().astype("<f4", copy=False)
    array.tofile(os.path.join(out_dir, name + ".bin"))
    lines = [
        f"photo {path}",
        f"channels {array.shape[0]}",
        f"image_size {image_size}",
        f"crop_pct {crop_pct}",
        f"interpolation {interpolation}",
        "mean " + " ".join(repr(v) for v in norm["mean"]),
        "std " + " ".join(repr(v) for v in norm["std"]),
        "shape " + " ".join(str(d) for d in array.shape),
    ]
    with open(os.path.join(out_dir, name + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--photos", default=PHOTO_DIR, help="directory of the photographs")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for name, spec in CASES.items():
        write_case(args.out_dir, name, args.photos, spec)
    print(f"wrote {len(CASES)} reference inputs to {args.out_dir}")


if __name__ == "__main__":
    main()
