"""Pooled-value agreement of the two stem poolings: torchvision's 3x3/2 max pool with
padding 1 (floor) against Caffe's pool1 (no padding, ceil; the numpy reference of
tests/test_caffe.py), on random 112x112 maps and on conv1 maps of the MSRA-named test network
imported with ``stem_pool="torch"`` (before the fix) and ``"caffe"`` (after).

    .venv/bin/python benchmarks/caffe_pool1.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_caffe as reference  # noqa: E402  (the Caffe-semantics reference lives with the tests)

from resnetlab.importers import import_weights  # noqa: E402
from resnetlab.weights import load_weights  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    for name, x in [("randn", torch.randn(1, 64, 112, 112)), ("relu(randn)", torch.randn(1, 64, 112, 112).relu())]:
        print(f"{name} 64x112x112 map: agreement {reference.pool1_agreement(x):.4f}")
    for side in (64, 224):
        with tempfile.TemporaryDirectory() as tmp:
            _, _, path = reference.write_msra(Path(tmp), side)
            import_weights("caffe", path, Path(tmp) / "w.safetensors")
            model, meta = load_weights(Path(tmp) / "w.safetensors")
            stem = reference._stem(model, meta, reference._image(side))
            caffe = reference.caffe_pool(stem.numpy(), 3, 2)
            before = torch.nn.MaxPool2d(3, 2, padding=1)(stem).numpy()
            after = model.maxpool(stem).numpy()
            print(f"test network, {side}x{side} input, conv1 {tuple(stem.shape[-2:])} -> pool1 {caffe.shape[-2:]}: "
                  f"agreement before {(before == caffe).mean():.4f}, after {(after == caffe).mean():.4f}")


if __name__ == "__main__":
    main()
