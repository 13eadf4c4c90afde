"""Training batches: one table from (augmentation, source) to what is done, chosen once.

Two sources: ``memory`` (the images are one uint8 tensor: digits, CIFAR) and ``folder`` (image
files decoded per item in loader workers: ImageNet, ``folder=PATH``). :data:`PIPELINES` says, for
every augmentation, what each source does; :func:`choose_pipeline` resolves a run's settings
against it before any work starts, and refuses what cannot be done the same way on both
sources with a :class:`ConfigError` naming the combination.

The batches of a run are a pure function of the step: epoch ``e`` visits the images in the order
``randperm(seed, e)`` (the last partial batch dropped), every process takes its slice of each
global batch, and the augmentation of step ``s`` is drawn from generators seeded with
``(seed, s)`` (per image: ``(seed, s, index)``), so a resumed or restarted run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError, ImageError
from .datasets import ImageSet
from .transforms import (center_view, crop_flip, draw_crop_flip, normalize, pad_crop_flip, pca_lighting,
                         random_resized_crop_flip, scale_crop_flip, square_crop_flip)

__all__ = ["AUGMENTS", "PIPELINES", "Pipeline", "choose_pipeline", "TrainBatches", "seed_of"]

Source = Literal["memory", "folder"]
AUGMENTS = ("cifar", "imagenet", "alexnet", "random_resized_crop", "none")
#: crop side when a run leaves ``crop`` unset and the source has no image size of its own
DEFAULT_CROP = 224

#: (augment, source) -> what a training image goes through. Every pair is served; the same
#: per-image function serves both sources wherever one exists, so the two cannot drift apart.
PIPELINES: dict[tuple[str, str], str] = {
    ("cifar", "memory"): "pad zeros, random crop, flip: whole batches on the device (section 4.2)",
    ("cifar", "folder"): "pad zeros, random crop, flip: per image in loader workers (section 4.2)",
    ("imagenet", "memory"): "shorter side random in [256, 480]*crop/224, random crop, flip, PCA lighting (section 3.4)",
    ("imagenet", "folder"): "shorter side random in [256, 480]*crop/224, random crop, flip, PCA lighting (section 3.4)",
    ("alexnet", "memory"): "shorter side to 256*crop/224, centre 256x256*crop/224, random crop, flip, PCA lighting "
                           "(Krizhevsky et al. 2012)",
    ("alexnet", "folder"): "shorter side to 256*crop/224, centre 256x256*crop/224, random crop, flip, PCA lighting "
                           "(Krizhevsky et al. 2012)",
    ("random_resized_crop", "memory"): "random area 8-100 %, aspect 3/4-4/3, resized to crop, flip (not the paper's)",
    ("random_resized_crop", "folder"): "random area 8-100 %, aspect 3/4-4/3, resized to crop, flip (not the paper's)",
    ("none", "memory"): "the evaluation view (shorter side to crop*256/224, central crop; as is at its own size)",
    ("none", "folder"): "the evaluation view (shorter side to crop*256/224, central crop; as is at its own size)",
}

#: per-image training transform of each augmentation: (image, crop, pad, flip, generator) -> image
_PER_IMAGE: dict[str, Callable[[torch.Tensor, int, int, bool, torch.Generator], torch.Tensor]] = {
    "cifar": pad_crop_flip,
    "imagenet": lambda im, crop, pad, flip, gen: scale_crop_flip(im, crop, flip, gen),
    "alexnet": lambda im, crop, pad, flip, gen: square_crop_flip(im, crop, flip, gen),
    "random_resized_crop": lambda im, crop, pad, flip, gen: random_resized_crop_flip(im, crop, flip, gen),
    "none": lambda im, crop, pad, flip, gen: center_view(im, crop),
}
#: augmentations followed by AlexNet's PCA lighting on the whole batch (section 3.4: "the
#: standard color augmentation in [21] is used")
_LIGHTING = ("imagenet", "alexnet")


@dataclass(frozen=True)
class Pipeline:
    """What a run does to its training images, resolved against :data:`PIPELINES`."""

    augment: str
    source: Source
    crop: int
    pad: int
    flip: bool
    lighting: bool
    batched: bool  # True: whole batches on the device; False: per image in loader workers

    @property
    def description(self) -> str:
        """The :data:`PIPELINES` entry with this run's numbers."""
        return f"augment={self.augment} on {self.source} data: {PIPELINES[(self.augment, self.source)]}; " \
               f"crop {self.crop}, pad {self.pad}, flip {'on' if self.flip else 'off'}"

    def transform(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One image's training transform (uint8 in, uint8 ``C x crop x crop`` out)."""
        return _PER_IMAGE[self.augment](image, self.crop, self.pad, self.flip, generator)


def choose_pipeline(augment: str, data: ImageSet, *, crop: int | None, pad: int, flip: bool) -> Pipeline:
    """Resolve a run's augmentation against its training data, before any work.

    ``crop`` None means the images' own size for in-memory data and :data:`DEFAULT_CROP` for
    folders. Refused with a :class:`ConfigError` naming the combination: an unknown augmentation;
    ``pad`` > 0 with anything but ``cifar`` (only that augmentation pads); ``flip`` with ``none``
    (the evaluation view is never mirrored); a ``cifar`` crop larger
    than the padded image; a crop of another size than the images when the per-pixel mean must
    be subtracted is checked by the caller, which knows the normalization.
    """
    if augment not in AUGMENTS:
        raise ConfigError(f"augment={augment!r} is not one of {', '.join(AUGMENTS)}")
    source: Source = "memory" if data.images is not None else "folder"
    if pad and augment != "cifar":
        raise ConfigError(f"pad={pad} with augment={augment} on {source} data: only augment=cifar pads "
                          "(section 4.2); set pad=0")
    if flip and augment == "none":
        raise ConfigError(f"flip=true with augment=none on {source} data: augment=none is the evaluation view, "
                          "never mirrored; set flip=false, or choose an augmentation that flips")
    size = tuple(data.images.shape[-2:]) if data.images is not None else None
    if crop is None:
        crop = size[0] if size is not None and size[0] == size[1] else DEFAULT_CROP
    if augment == "cifar" and size is not None and (crop > size[0] + 2 * pad or crop > size[1] + 2 * pad):
        raise ConfigError(f"crop={crop} with augment=cifar on {source} data: larger than the "
                          f"{size[0] + 2 * pad}x{size[1] + 2 * pad} padded images")
    batched = augment == "cifar" and source == "memory"
    return Pipeline(augment, source, crop, pad, flip, augment in _LIGHTING, batched)


def seed_of(*parts: int) -> int:
    """A 63-bit seed from integers (FNV-1a style; stable across runs, processes and machines)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


class TrainBatches:
    """The training batches of a run from step ``start`` on: normalized float tensors on the
    device, this process's slice of every global batch of ``batch_size`` images.

    ``skipped`` names the unreadable images left out (``skip_bad_images``; one message per file,
    each passed to ``on_skip`` when first met); without it the first one raises its :class:`DataError`.
    """

    def __init__(self, data: ImageSet, pipeline: Pipeline, *, batch_size: int, seed: int, mean: Any, std: Any,
                 device: torch.device, channels_last: bool, rank: int = 0, world: int = 1,
                 num_workers: int = 0, skip_bad_images: bool = False,
                 on_skip: Callable[[str], None] | None = None) -> None:
        self.data, self.pipeline, self.batch_size, self.seed = data, pipeline, batch_size, seed
        self.device, self.channels_last, self.rank, self.world = device, channels_last, rank, world
        self.num_workers, self.skip_bad_images, self.on_skip = num_workers, skip_bad_images, on_skip
        self.steps_per_epoch = len(data) // batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size {batch_size} is larger than the {len(data)} training images")
        self.local = batch_size // world
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self.targets = data.targets.to(device)
        self.images = data.images.to(device) if pipeline.batched else None
        self._order: tuple[int, torch.Tensor] | None = None
        self.skipped: list[str] = []

    def indices(self, step: int) -> torch.Tensor:
        """This process's image indices of ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(seed_of(self.seed, epoch))
            self._order = (epoch, torch.randperm(len(self.data), generator=gen))
        batch = self._order[1][i * self.batch_size:(i + 1) * self.batch_size]
        return batch[self.rank * self.local:(self.rank + 1) * self.local]

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed_of(self.seed, step, 1))

    def _finish(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """uint8 batch on the device -> PCA lighting where the pipeline has it -> normalized float."""
        if self.pipeline.lighting:
            x = pca_lighting(x.float().div_(255), self._generator(step))
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def stream(self, start: int, total: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` of steps ``start .. total - 1``."""
        return self._batched(start, total) if self.pipeline.batched else self._per_image(start, total)

    def _batched(self, start: int, total: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        p = self.pipeline
        h = self.images.shape[-2]
        for step in range(start, total):
            idx = self.indices(step).to(self.device)
            # drawn for the whole global batch, this rank keeps its slice: N ranks see what one process would
            oy, ox, flip = draw_crop_flip(self.batch_size, h + 2 * p.pad - p.crop, self._generator(step), p.flip)
            part = slice(self.rank * self.local, (self.rank + 1) * self.local)
            x = crop_flip(self.images[idx], p.pad, oy[part], ox[part], flip[part], crop=p.crop)
            yield self._finish(x, step), self.targets[idx]

    def _per_image(self, start: int, total: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(_SeededItems(self.data, self.pipeline), batch_sampler=_StepSampler(self, start, total),
                            num_workers=self.num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.num_workers else None)
        for step, (x, y, errors) in enumerate(loader, start):
            if errors and not self.skip_bad_images:
                raise ImageError(errors[0])
            for error in errors:
                if error not in self.skipped:
                    self.skipped.append(error)
                    if self.on_skip is not None:
                        self.on_skip(error)
            if len(y) == 0:
                continue
            yield self._finish(x.to(self.device, non_blocking=True), step), y.to(self.device, non_blocking=True)


class _StepSampler:
    """Batch sampler of steps ``start .. total - 1``: this process's ``(index, seed)`` items of each."""

    def __init__(self, batches: TrainBatches, start: int, total: int) -> None:
        self.batches, self.start, self.total = batches, start, total

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = self.batches.seed
        for s in range(self.start, self.total):
            yield [(i, seed_of(seed, s, i)) for i in self.batches.indices(s).tolist()]


class _SeededItems(Dataset):
    """Items ``(index, seed)``: the image's transform draws from a generator seeded with ``seed``
    (so it does not depend on the worker), and an unreadable image becomes its error message."""

    def __init__(self, data: ImageSet, pipeline: Pipeline) -> None:
        self.data, self.pipeline = data, pipeline

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor | None, int, str | None]:
        index, seed = item
        try:
            image, target = self.data[index]  # a decoding error names the file
        except DataError as exc:
            return None, -1, str(exc)
        try:
            image = self.pipeline.transform(image, torch.Generator().manual_seed(seed))
        except DataError as exc:
            where = self.data.items[index] if self.data.items is not None else f"image {index} of {self.data.name}"
            return None, -1, f"{where}: {exc}"
        return image, target, None


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    good = [(im, t) for im, t, err in items if err is None]
    errors = [err for _, _, err in items if err is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), errors
    return torch.stack([im for im, _ in good]), torch.tensor([t for _, t in good]), errors
