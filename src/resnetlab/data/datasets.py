"""The data sets that ``--data`` names, as one :class:`ImageSet` type.

``open_dataset(spec, split)`` with ``spec`` one of ``digits``, ``cifar10=PATH``,
``cifar100=PATH``, ``imagenet=PATH``, ``folder=PATH``, ``synthetic`` (or ``synthetic=SIZE``).
Splits: ``train`` (every training image), ``val`` and ``test``. For sets without their own
validation images (digits, CIFAR, a folder without ``val/``) ``val`` is the fixed hold-out of
:func:`holdout_split`: the paper's 45k/5k CIFAR protocol (section 4.2), the same indices
every time; :func:`open_train_val` gives the matching 45k training part.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import CIFAR10_CLASSES
from ..errors import DataError
from .images import IMAGE_EXTENSIONS, cached_decode, decode_image, image_files, scan_image_folder
from .imagenet import IMAGENET_WNIDS, val_image_number, validation_labels

__all__ = [
    "CIFAR10_CLASSES",
    "DATA_NAMES",
    "ImageSet",
    "holdout_split",
    "open_dataset",
    "open_train_val",
    "parse_data_spec",
    "stratified_sample",
]

#: ``--data`` names and whether they take ``=PATH``.
DATA_NAMES = {"digits": False, "synthetic": False, "cifar10": True, "cifar100": True, "imagenet": True, "folder": True}
SPLITS = ("train", "val", "test")
#: Fraction of the training images held out as ``val``: 5k of CIFAR's 50k (section 4.2).
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0
#: Seed of :func:`stratified_sample` (fixed, so runs with different seeds train on the same images).
SUBSET_SEED = 0
#: digits: side the 8x8 scans are upsampled to, and the fixed train/test split.
DIGITS_SIZE = 16
DIGITS_TEST_FRACTION = 0.2


class ImageSet(Dataset):
    """A labelled image set yielding ``(uint8 tensor 3 x H x W, int target)``.

    In memory (``images`` is an ``N x 3 x H x W`` uint8 tensor: digits, CIFAR) or lazy
    (``images`` is None and ``items[i]`` is decoded by ``load`` on access: image folders).
    ``transform``, if set, is applied to each image in ``__getitem__`` (data-loader workers).
    ``skipped`` names the unreadable files left out when the set was opened with
    ``skip_bad_images`` (one message per file).
    """

    def __init__(
        self,
        name: str,
        classes: Sequence[str],
        targets: torch.Tensor | Sequence[int],
        *,
        images: torch.Tensor | None = None,
        items: Sequence[Any] | None = None,
        load: Callable[[Any], torch.Tensor] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.name = name
        self.classes = list(classes)
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        self.images = images
        self.items = items
        self.load = load
        self.transform = transform
        self.skipped: list[str] = []
        if (images is None) == (items is None) or (items is not None and load is None):
            raise ValueError("ImageSet needs either images, or items and load")
        if len(self.targets) != (len(images) if images is not None else len(items)):
            raise ValueError("ImageSet: images/items and targets differ in length")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index] if self.images is not None else self.load(self.items[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "ImageSet":
        """The images at ``indices`` (same classes, name and transform)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        out = copy.copy(self)
        out.targets = self.targets[idx]
        if self.images is not None:
            out.images = self.images[idx]
        else:
            out.items = [self.items[i] for i in idx.tolist()]
        return out

    def relabelled(self, index_of: Sequence[int], classes: Sequence[str]) -> "ImageSet":
        """A shallow copy whose class ``i`` is class ``index_of[i]`` of ``classes`` (a model's outputs;
        :func:`resnetlab.evaluate.label_map`)."""
        out = copy.copy(self)
        out.targets = torch.as_tensor(index_of, dtype=torch.int64)[self.targets]
        out.classes = list(classes)
        return out

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> "ImageSet":
        """A shallow copy applying ``transform`` to every image it yields."""
        out = copy.copy(self)
        out.transform = transform
        return out

    @property
    def image_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (of the first one for lazy sets)."""
        first = self.images[0] if self.images is not None else self.load(self.items[0])
        return tuple(first.shape)

    def __repr__(self) -> str:
        where = "in memory" if self.images is not None else "lazy"
        return f"ImageSet({self.name!r}, n={len(self)}, classes={len(self.classes)}, {where})"


def holdout_split(n: int, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_indices, val_indices)``: a fixed random ``fraction`` of ``range(n)`` held out.

    The paper's CIFAR protocol: 45k/5k of the 50k training images (section 4.2). Same
    indices on every call and machine (a seeded CPU permutation); both parts sorted.
    """
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise DataError(f"cannot hold out {fraction:.0%} of {n} images for validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def stratified_sample(targets: torch.Tensor, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Sorted indices of ``n`` images drawn class by class in turn from a fixed random order.

    Every class gets ``n // classes`` images (one more for some when ``n`` does not divide),
    until a class runs out; the same indices on every call and machine, whatever a run's seed.
    Shortened runs train on it (``train_subset``): the first ``n`` images of a class-sorted
    folder would be a single class.
    """
    total = len(targets)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    labels = targets[perm]
    by_class = torch.argsort(labels, stable=True)  # grouped by class, random order inside each
    counts = torch.bincount(labels)
    first = torch.cumsum(counts, 0) - counts
    turn = torch.empty_like(labels)
    turn[by_class] = torch.arange(total) - first[labels[by_class]]  # place of each image within its class
    chosen = torch.argsort(turn * total + torch.arange(total))[:n]
    return perm[chosen].sort().values


def parse_data_spec(spec: str) -> tuple[str, Path | None]:
    """``"cifar10=/data/c10"`` -> ``("cifar10", Path("/data/c10"))``; unknown names -> DataError."""
    name, sep, path = spec.partition("=")
    name = name.strip().lower()
    if name not in DATA_NAMES:
        raise DataError(f"unknown data set {spec!r}; expected one of: digits, synthetic[=SIZE], "
                        "cifar10=PATH, cifar100=PATH, imagenet=PATH, folder=PATH")
    if name == "synthetic":
        return name, Path(path) if sep else None
    if DATA_NAMES[name] and not path:
        raise DataError(f"--data {name} needs a path: {name}=PATH")
    if not DATA_NAMES[name] and sep:
        raise DataError(f"--data {name} takes no path")
    return name, Path(path).expanduser() if sep else None


def open_dataset(spec: str, split: str = "train", skip_bad_images: bool = False) -> ImageSet:
    """The ``split`` (``train``, ``val`` or ``test``) of the data set named by ``spec``.

    ``spec`` is a ``--data`` value. Missing or malformed folders, unreadable files and
    unknown names raise :class:`DataError`; with ``skip_bad_images`` the unreadable files of a
    set decoded when it opens (a CIFAR image folder) are left out and named in ``skipped``
    (lazy folders decode later: whoever reads them skips).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    name, path = parse_data_spec(spec)
    if name == "digits":
        return _digits(split)
    if name == "synthetic":
        return _synthetic(split, str(path) if path is not None else None)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, path, split, skip_bad_images)
    return _image_folder(name, path, split)


def open_train_val(spec: str, skip_bad_images: bool = False) -> tuple[ImageSet, ImageSet]:
    """``(train, val)`` for training with validation: a separate ``val`` folder where the data
    set has one (ImageNet), else the complement of :func:`holdout_split` and its hold-out
    (CIFAR 45k/5k, section 4.2; of the readable images, with ``skip_bad_images``)."""
    name, path = parse_data_spec(spec)
    if name in ("imagenet", "folder") and (path / "val").is_dir():
        return open_dataset(spec, "train"), open_dataset(spec, "val")
    full = open_dataset(spec, "train", skip_bad_images)
    train_idx, val_idx = holdout_split(len(full))
    return full.subset(train_idx), full.subset(val_idx)


def _holdout(full: ImageSet, split: str) -> ImageSet:
    """``split`` of a set whose validation images are held out of its training images."""
    if split == "val":
        return full.subset(holdout_split(len(full))[1])
    return full


# ----------------------------------------------------------------------------- digits


def _digits(split: str) -> ImageSet:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), shipped with it (no download).

    Upsampled to 3 x 16 x 16 uint8 (bilinear, grey copied to RGB) so that the CIFAR nets'
    three stages work on 16, 8 and 4 pixel maps; a fixed stratified 1,437/360 train/test split.
    """
    # scikit-learn takes about a second to import and only the digits need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split  # as above

    digits = load_digits()
    grey = torch.from_numpy(digits.images).float().div_(16).unsqueeze(1)  # N x 1 x 8 x 8 in [0, 1]
    big = torch.nn.functional.interpolate(grey, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = big.mul_(255).round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    targets = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=digits.target
    )
    idx = np.sort(test_idx if split == "test" else train_idx)
    full = ImageSet("digits", [str(d) for d in range(10)], targets[idx], images=images[idx])
    return _holdout(full, split) if split != "test" else full


# ----------------------------------------------------------------------------- synthetic


def _synthetic_image(item: tuple[int, int]) -> torch.Tensor:
    seed, size = item
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)


def _synthetic(split: str, size_text: str | None) -> ImageSet:
    """Random images for benchmarks: ``synthetic`` is CIFAR-like (3x32x32, 10 classes, 10k/2k in
    memory); ``synthetic=224`` ImageNet-like (1000 classes, 12,800/1,000 images generated
    lazily from per-image seeds, so it costs no memory and no disk)."""
    size = 32
    if size_text is not None:
        if not size_text.isdigit() or not 8 <= int(size_text) <= 1024:
            raise DataError(f"synthetic=SIZE needs an image side between 8 and 1024, got {size_text!r}")
        size = int(size_text)
    num_classes = 10 if size <= 64 else 1000
    n = {"train": 10_000, "val": 1_000, "test": 2_000}[split] if size <= 64 else {"train": 12_800, "val": 1_000, "test": 1_000}[split]
    offset = {"train": 0, "val": 1 << 24, "test": 1 << 25}[split]
    targets = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(offset + 1))
    classes = [f"class{i}" for i in range(num_classes)]
    name = f"synthetic{size}"
    if size <= 64:
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(offset))
        return ImageSet(name, classes, targets, images=images)
    return ImageSet(name, classes, targets, items=[(offset + i, size) for i in range(n)], load=_synthetic_image)


# ----------------------------------------------------------------------------- CIFAR


class _BatchUnpickler(pickle.Unpickler):
    """Reads the published CIFAR python batches without running code from the file:
    only numpy array reconstruction is allowed, anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy"):
            if name == "_reconstruct":  # numpy 1 and 2 name its module differently; ask numpy itself
                return np.ndarray.__reduce__(np.zeros(0))[0]
            return getattr(np, name)
        return super().find_class(module, name)


def _unpickle_batch(data: bytes, where: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()  # as published: Python 2 pickles
    except Exception as exc:
        raise DataError(f"{where}: not a CIFAR python batch ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR python batch (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _keys(name: str) -> tuple[str, str]:
    """``(class-names key, labels key)`` of a python batch: CIFAR-100's are its 100 fine classes."""
    return ("label_names", "labels") if name == "cifar10" else ("fine_label_names", "fine_labels")


def _binary_batch(name: str, data: bytes, where: str) -> dict:
    """A file of the published binary version as the python batch it equals: ``*.txt`` the class
    names, one a line; ``*.bin`` records of the label byte(s) (CIFAR-100: coarse, then fine) and the
    3,072 pixel bytes in the python batches' order (red plane, green, blue; each row-major)."""
    names_key, labels_key = _keys(name)
    if where.endswith(".txt"):
        return {names_key: [line.strip() for line in data.decode("latin1").splitlines() if line.strip()]}
    record = 3072 + (1 if name == "cifar10" else 2)
    if not data or len(data) % record:
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    return {"data": rows[:, record - 3072:], labels_key: rows[:, record - 3073].astype(np.int64)}


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, a dict key
class _Layout:
    """One published version of a CIFAR set: its folder, the archive holding it, the file that holds
    each python batch (``data_batch_1``, ``batches.meta``, ...) and how a file's bytes become that batch."""

    folder: str
    archive: str
    files: dict[str, str]
    decode: Callable[[bytes, str], dict]

    def file(self, batch: str) -> str:
        return self.files.get(batch, batch)


def _binary_files(meta: str, names: str, batches: Sequence[str]) -> dict[str, str]:
    return {meta: names, **{batch: f"{batch}.bin" for batch in batches}}


#: The versions of each set that its authors publish: the python batches, then the binary version.
CIFAR_LAYOUTS: dict[str, tuple[_Layout, ...]] = {
    "cifar10": (_Layout("cifar-10-batches-py", "cifar-10-python.tar.gz", {}, _unpickle_batch),
                _Layout("cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                        _binary_files("batches.meta", "batches.meta.txt",
                                      [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]),
                        partial(_binary_batch, "cifar10"))),
    "cifar100": (_Layout("cifar-100-python", "cifar-100-python.tar.gz", {}, _unpickle_batch),
                 _Layout("cifar-100-binary", "cifar-100-binary.tar.gz",
                         _binary_files("meta", "fine_label_names.txt", ["train", "test"]),
                         partial(_binary_batch, "cifar100"))),
}


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _batch_files(name: str, split: str) -> tuple[list[str], str]:
    """``(image batch files, meta file)`` of ``split`` in the published python layout."""
    if name == "cifar10":
        return (["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]), "batches.meta"
    return (["test"] if split == "test" else ["train"]), "meta"


def _cifar_archive(name: str, archive: Path, split: str) -> ImageSet:
    """An archive as published (``cifar-10-python.tar.gz``, ``cifar-10-binary.tar.gz``, and CIFAR-100's),
    read in place: the members of ``split`` in one pass, decoded as the folder's files are."""
    files, meta_file = _batch_files(name, split)
    wanted = {layout: {f"{layout.folder}/{layout.file(f)}" for f in [*files, meta_file]}
              for layout in CIFAR_LAYOUTS[name]}
    every = set().union(*wanted.values())
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name_in_tar = member.name.removeprefix("./")  # a repacked archive may say ./cifar-10-batches-py/
                if name_in_tar in every and member.isfile():
                    found[name_in_tar] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable {name} archive ({exc})") from None
    layout = next((layout for layout, members in wanted.items() if members <= set(found)), None)
    if layout is None:
        closest = max(wanted.values(), key=lambda members: len(members & set(found)))  # the version it nearly is
        missing = sorted(closest - set(found))
        raise DataError(f"{archive}: not the published {name} archive (no {', '.join(missing)})")
    return _cifar_batches(name, lambda file: layout.decode(found[f"{layout.folder}/{layout.file(file)}"],
                                                           f"{archive}:{layout.folder}/{layout.file(file)}"),
                          split, str(archive))


def _cifar_batches(name: str, read: Callable[[str], dict], split: str, root: str) -> ImageSet:
    """The batches as published (``cifar-10-batches-py`` / ``cifar-100-python``, or the binary version
    decoded to the same), each file read by ``read(name)``; ``root`` names them in messages."""
    files, meta_file = _batch_files(name, split)
    names_key, label_key = _keys(name)
    images, labels = [], []
    for file in files:
        batch = read(file)
        data, target = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or target is None \
                or len(target) != len(data):
            raise DataError(f"{root}/{file}: malformed CIFAR batch (expected 'data' N x 3072 and '{label_key}')")
        images.append(torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, 32, 32))
        labels.append(torch.as_tensor(np.asarray(target), dtype=torch.int64))
    meta = read(meta_file)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(names_key, [])]
    num_classes = 10 if name == "cifar10" else 100
    if len(classes) != num_classes:
        raise DataError(f"{root}/{meta_file}: expected {num_classes} names under '{names_key}'")
    targets = torch.cat(labels)
    if targets.min() < 0 or targets.max() >= num_classes:
        raise DataError(f"{root}: labels outside 0..{num_classes - 1}")
    full = ImageSet(name, classes, targets, images=torch.cat(images))
    return _holdout(full, split) if split != "test" else full


def _cifar_folder(name: str, root: Path, split: str, skip_bad_images: bool) -> ImageSet:
    """An image-folder root ``train/<class>/*``, ``test/<class>/*`` with 32x32 images, decoded
    into memory once (then cached, see :func:`~resnetlab.data.images.cached_decode`); with
    ``skip_bad_images`` the unreadable files are left out and named in ``skipped``."""
    folder = root / ("test" if split == "test" else "train")
    if not folder.is_dir():
        raise DataError(f"{root} has no {folder.name}/ folder (expected {root}/{folder.name}/<class>/<image>)")
    classes, paths, targets = scan_image_folder(folder)
    if name == "cifar10" and sorted(classes) != sorted(CIFAR10_CLASSES):
        raise DataError(f"{folder}: class folders {classes} are not the CIFAR-10 classes {list(CIFAR10_CLASSES)}")
    if name == "cifar100" and len(classes) != 100:
        raise DataError(f"{folder}: {len(classes)} class folders, CIFAR-100 has 100")
    # Canonical CIFAR order is alphabetical for both sets (batches.meta), which is the scan's order.
    skipped: dict[int, str] = {}
    images = cached_decode(paths, targets, size=(32, 32), skipped=skipped if skip_bad_images else None)
    full = ImageSet(name, classes, [t for i, t in enumerate(targets) if i not in skipped], images=images)
    full.skipped = list(skipped.values())
    return _holdout(full, split) if split != "test" else full


def _cifar(name: str, root: Path, split: str, skip_bad_images: bool) -> ImageSet:
    if root.is_file():
        if not tarfile.is_tarfile(root):
            raise DataError(f"{root}: a file that is not a tar archive; {name}=PATH takes a published archive "
                            f"({' or '.join(layout.archive for layout in CIFAR_LAYOUTS[name])}) or a folder")
        return _cifar_archive(name, root, split)
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}")
    marker = _batch_files(name, "train")[0][0]
    for layout in CIFAR_LAYOUTS[name]:
        for candidate in (root, root / layout.folder):
            if (candidate / layout.file(marker)).is_file():
                return _cifar_batches(name, lambda file: layout.decode(_read_file(candidate / layout.file(file)),
                                                                       str(candidate / layout.file(file))),
                                      split, str(candidate))
    if (root / "train").is_dir() or (root / "test").is_dir():
        return _cifar_folder(name, root, split, skip_bad_images)
    python, binary = (layout.folder for layout in CIFAR_LAYOUTS[name])
    raise DataError(f"{root} is neither a {python} python-batches folder, a {binary} binary-version folder, nor "
                    f"an image-folder root with train/<class>/* or test/<class>/*")


# ----------------------------------------------------------------------------- image folders


def _image_folder(name: str, root: Path, split: str) -> ImageSet:
    """``imagenet=PATH`` / ``folder=PATH``: ``train/``, ``val/`` and/or ``test/`` of
    ``<class>/<image>``, decoded lazily per item (in data-loader workers)."""
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}")
    if split == "val" and not (root / "val").is_dir():
        if name == "imagenet" and not (root / "train").is_dir() and not _has_folders(root):
            return _imagenet_flat_val(root)  # imagenet=PATH names the unpacked validation folder itself
        if name == "imagenet":
            raise DataError(f"{root} has no val/ folder")
        return _holdout(_image_folder(name, root, "train"), "val")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    if name == "imagenet" and split == "val" and not _has_folders(folder):
        return _imagenet_flat_val(folder)
    classes, paths, targets = scan_image_folder(folder)
    if split != "train" and (root / "train").is_dir():
        train_classes = sorted(e.name for e in (root / "train").iterdir() if e.is_dir() and not e.name.startswith("."))
        if train_classes and classes != train_classes:
            raise DataError(f"{folder}: class folders differ from {root / 'train'} ({len(classes)} vs "
                            f"{len(train_classes)}); labels would not match")
    return ImageSet(name, classes, targets, items=paths, load=decode_image)


def _has_folders(folder: Path) -> bool:
    return any(entry.is_dir() for entry in os.scandir(folder))


def _imagenet_flat_val(folder: Path) -> ImageSet:
    """ILSVRC-2012's validation images in one folder, as ``ILSVRC2012_img_val.tar`` unpacks, labelled
    by a published list (:func:`~resnetlab.data.imagenet.validation_labels`); the classes are the
    1,000 synset ids in index order, as an image folder of all of them sorts them."""
    labels, source = validation_labels(folder)
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no class folders")
    numbers = [val_image_number(f) for f in files]
    missing = [f for f, n in zip(files, numbers) if n not in labels]
    if missing:
        raise DataError(f"{folder}: {len(missing)} of {len(files)} images have no label in {source} "
                        f"(first: {missing[0]}; expected ILSVRC2012_val_N.JPEG)")
    return ImageSet("imagenet", list(IMAGENET_WNIDS), [labels[n] for n in numbers],  # type: ignore[index]
                    items=[str(folder / f) for f in files], load=decode_image)
