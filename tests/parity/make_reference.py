#!/usr/bin/python3
"""Writes parity fixtures: random-initialised torchvision ViT / Swin models (torchvision
tensor names, and the same weights renamed to timm names), an input batch of real
photographs (Debian's python3-skimage data) and reference logits computed by PyTorch in
float64.

Cases:
  deit_s      torchvision VisionTransformer in DeiT-S shape (224, patch 16, 384 wide, 12 deep, 6 heads)
  swin_t      torchvision swin_t
  deit_dist   small distilled DeiT (1 channel, 32 px, patch 4, 64 wide): timm's DistilledVisionTransformer
              forward written here on torchvision's encoder blocks
  swin_pad    small Swin on 1-channel 32 px input, patch 2, window 7: 16x16 and 8x8 maps, both padded to
              the window (torchvision pads; exercises padding + shift masks)

Usage: make_reference.py OUT_DIR [--cases deit_s,swin_t,...]
"""
import argparse
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
PHOTO_DIR = "/usr/lib/python3/dist-packages/skimage/data"


def perturb(model, seed):
    """torchvision zero-initialises biases, heads and LayerNorm shifts; give every tensor
    random values so that a wrong mapping of any of them changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if p.dim() == 1 else 0.02
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def photo_batch(size, gray):
    tf = transforms.Compose([
        transforms.Resize(int(size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize([0.5] if gray else [0.485, 0.456, 0.406], [0.5] if gray else [0.229, 0.224, 0.225])])
    imgs = [tf(Image.open(os.path.join(PHOTO_DIR, p)).convert("L" if gray else "RGB")) for p in PHOTOS]
    return torch.stack(imgs)


# ---- torchvision → timm names -------------------------------------------------------

def vit_timm_names(sd):
    out = {}
    for k, v in sd.items():
        n = k
        n = n.replace("class_token", "cls_token").replace("encoder.pos_embedding", "pos_embed")
        n = n.replace("conv_proj.", "patch_embed.proj.").replace("encoder.ln.", "norm.")
        n = n.replace("heads.head.", "head.").replace("heads_dist.", "head_dist.")
        n = n.replace("encoder.layers.encoder_layer_", "blocks.")
        n = n.replace("self_attention.in_proj_weight", "attn.qkv.weight")
        n = n.replace("self_attention.in_proj_bias", "attn.qkv.bias")
        n = n.replace("self_attention.out_proj.", "attn.proj.")
        n = n.replace(".ln_1.", ".norm1.").replace(".ln_2.", ".norm2.")
        n = n.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
        out[n] = v
    return out


def swin_timm_names(sd, legacy):
    """timm >= 0.9 names (downsample at the start of stage i, head.fc), or legacy timm
    (downsample at the end of stage i-1, head)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "features":
            idx = int(parts[1])
            if idx == 0:
                sub = {"0": "proj", "2": "norm"}[parts[2]]
                n = "patch_embed.%s.%s" % (sub, parts[3])
            elif idx % 2 == 1:
                rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
                n = "layers.%d.blocks.%s.%s" % ((idx - 1) // 2, parts[2], rest)
            else:
                stage = idx // 2 - (1 if legacy else 0)
                n = "layers.%d.downsample.%s" % (stage, ".".join(parts[2:]))
        elif parts[0] == "head":
            n = k if legacy else "head.fc." + parts[1]
        else:
            n = k
        out[n] = v
    return out


# ---- models -------------------------------------------------------------------------

def deit_s():
    m = torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=6,
                                             hidden_dim=384, mlp_dim=1536, num_classes=1000)
    return perturb(m, 1)


class DistilledDeit(torch.nn.Module):
    """timm's DeiT with a distillation token, on torchvision's encoder blocks:
    tokens [cls, dist, patches] + pos_embed → blocks → LayerNorm → (head(cls) + head_dist(dist)) / 2."""

    def __init__(self, img=32, patch=4, dim=64, depth=2, heads=2, classes=10, chans=1):
        super().__init__()
        base = torchvision.models.VisionTransformer(image_size=img, patch_size=patch, num_layers=depth,
                                                    num_heads=heads, hidden_dim=dim, mlp_dim=4 * dim,
                                                    num_classes=classes)
        base.conv_proj = torch.nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)
        self.conv_proj = base.conv_proj
        self.class_token = base.class_token
        self.dist_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
        n = (img // patch) ** 2 + 2
        base.encoder.pos_embedding = torch.nn.Parameter(torch.zeros(1, n, dim))
        self.encoder = base.encoder
        self.heads = base.heads
        self.heads_dist = torch.nn.Linear(dim, classes)

    def forward(self, x):
        b = x.shape[0]
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), x], dim=1)
        x = x + self.encoder.pos_embedding
        x = self.encoder.ln(self.encoder.layers(x))
        return (self.heads.head(x[:, 0]) + self.heads_dist(x[:, 1])) / 2


def swin_t():
    return perturb(torchvision.models.swin_t(), 2)


def swin_pad():
    m = torchvision.models.SwinTransformer(patch_size=[2, 2], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                           window_size=[7, 7], num_classes=10)
    m.features[0][0] = torch.nn.Conv2d(1, 32, kernel_size=2, stride=2)
    return perturb(m, 3)


CARDS = {
    "deit_dist": "arch: deit\nimg_size: 32\nin_chans: 1\npatch_size: 4\nembed_dim: 64\ndepth: 2\n"
                 "num_heads: 2\nnum_classes: 10\ndistilled: true\n"
                 "preprocess: {mean: [0.5], std: [0.5], crop_pct: 0.875}\n",
    "swin_pad": "arch: swin\nimg_size: 32\nin_chans: 1\npatch_size: 2\nembed_dim: 32\ndepths: [2, 2]\n"
                "num_heads: [2, 4]\nwindow_size: 7\nnum_classes: 10\n"
                "preprocess: {mean: [0.5], std: [0.5], crop_pct: 0.875}\n",
}
ARCH_PRESET = {"deit_s": "deit_small", "swin_t": "swin_tiny"}


def build(case):
    if case == "deit_s":
        return deit_s(), photo_batch(224, False), {"torchvision": None, "timm": vit_timm_names}
    if case == "swin_t":
        return swin_t(), photo_batch(224, False), {
            "torchvision": None, "timm": lambda sd: swin_timm_names(sd, False),
            "timmlegacy": lambda sd: swin_timm_names(sd, True)}
    if case == "deit_dist":
        torch.manual_seed(4)
        return perturb(DistilledDeit(), 4), photo_batch(32, True), {"timm": vit_timm_names}
    if case == "swin_pad":
        return swin_pad(), photo_batch(32, True), {"torchvision": None, "timm": lambda sd: swin_timm_names(sd, False)}
    raise SystemExit("unknown case " + case)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--cases", default="deit_s,swin_t,deit_dist,swin_pad")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    for case in args.cases.split(","):
        model, images, schemes = build(case)
        model.eval()
        with torch.no_grad():
            logits = model.double()(images.double()).float()
        model.float()
        sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        for scheme, rename in schemes.items():
            weights = rename(sd) if rename else sd
            base = os.path.join(args.out, "%s_%s" % (case, scheme))
            st.save(base + ".safetensors", weights)
            if case in CARDS:
                with open(base + ".yaml", "w") as f:
                    f.write(CARDS[case])
        st.save(os.path.join(args.out, case + "_input.safetensors"), {"input": images.numpy()})
        st.save(os.path.join(args.out, case + "_logits.safetensors"), {"logits": logits.numpy()})
        print("%s: input %s logits %s, schemes %s" % (case, tuple(images.shape), tuple(logits.shape),
                                                     ",".join(schemes)))


if __name__ == "__main__":
    main()
