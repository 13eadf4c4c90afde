"""Small image folders the tests write: ``root/<class>/0000.<fmt>``, random pixels, seeded."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def write_image_folder(root: Path, classes: Sequence[str], per_class: int = 3, size: int | tuple[int, int] = 32,
                       fmt: str = "png", seed: int = 0) -> Path:
    """``per_class`` random ``size`` (side, or (H, W)) images in ``root/<class>/`` for each class; returns ``root``."""
    rng = np.random.default_rng(seed)
    height, width = (size, size) if isinstance(size, int) else size
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name / f"{i:04d}.{fmt}")
    return root
