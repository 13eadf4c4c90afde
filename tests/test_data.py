"""Data sets: digits, CIFAR (python batches and image folders), image folders, synthetic, bad input."""

from __future__ import annotations

import io
import os
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolders import write_image_folder
from resnetlab.data import CIFAR10_CLASSES, holdout_split, open_dataset, open_train_val, stratified_sample
from resnetlab.data import images as images_mod
from resnetlab.data.imagenet import IMAGENET_WNIDS
from resnetlab.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared 50k-image copy uses the real cache (~/.cache/resnetlab): decoded once per machine.
    if "shared" not in request.node.name:
        monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))


def test_digits_splits_are_fixed_and_disjoint() -> None:
    train, val, test = (open_dataset("digits", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1437, 144, 360)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 16, 16)
    assert train.classes == [str(d) for d in range(10)] and train.targets.dtype == torch.int64
    image, target = test[0]
    assert image.shape == (3, 16, 16) and isinstance(target, int)
    # val is a subset of train; test shares no image with train
    train_rows = {row.numpy().tobytes() for row in train.images}
    assert all(row.numpy().tobytes() in train_rows for row in val.images)
    assert torch.equal(open_dataset("digits", "test").images, test.images)
    part, held = open_train_val("digits")
    assert len(part) + len(held) == len(train) and torch.equal(held.images, val.images)


def test_holdout_split_is_the_papers_45k_5k() -> None:
    train_idx, val_idx = holdout_split(50_000)
    assert len(train_idx) == 45_000 and len(val_idx) == 5_000
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 50_000
    again = holdout_split(50_000)
    assert torch.equal(again[1], val_idx)


def test_stratified_sample_is_balanced_fixed_and_seed_free() -> None:
    targets = torch.arange(10).repeat_interleave(500)  # sorted by class, like an image folder
    idx = stratified_sample(targets, 5000 // 10)
    assert len(idx) == 500 and len(set(idx.tolist())) == 500
    assert torch.bincount(targets[idx], minlength=10).tolist() == [50] * 10
    assert torch.equal(stratified_sample(targets, 500), idx)  # the same images every time
    assert not torch.equal(idx, torch.arange(0, 5000, 10))  # a random pick inside each class
    odd = torch.bincount(targets[stratified_sample(targets, 23)], minlength=10)
    assert odd.sum() == 23 and odd.max() - odd.min() <= 1
    small = torch.tensor([0] * 3 + [1] * 20)  # a class that runs out gives all it has
    assert torch.bincount(small[stratified_sample(small, 13)]).tolist() == [3, 10]
    assert len(stratified_sample(targets, 10**6)) == 5000


def test_synthetic() -> None:
    small = open_dataset("synthetic", "train")
    assert small.images.shape == (10_000, 3, 32, 32)
    big = open_dataset("synthetic=224", "val")
    image, target = big[5]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and 0 <= target < 1000
    assert torch.equal(big[5][0], image)  # generated from a per-image seed: stable
    with pytest.raises(DataError, match="between 8 and 1024"):
        open_dataset("synthetic=big")


def _write_batches(root: Path, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f, protocol=2)


def test_cifar_python_batches(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    train = open_dataset(f"cifar10={tmp_path}", "train")  # the parent folder works too
    assert len(train) == 100 and train.images.shape == (100, 3, 32, 32) and train.classes == list(CIFAR10_CLASSES)
    assert len(open_dataset(f"cifar10={tmp_path / 'cifar-10-batches-py'}", "test")) == 20
    assert len(open_dataset(f"cifar10={tmp_path}", "val")) == 10


def test_cifar_published_archive_read_in_place(tmp_path: Path) -> None:
    """`cifar10=cifar-10-python.tar.gz`, the file as downloaded: the same images as the extracted folder;
    a hostile member is refused as in a folder, and another archive is named as such."""
    import tarfile

    _write_batches(tmp_path / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for split in ("train", "val", "test"):
        packed = open_dataset(f"cifar10={tmp_path / 'cifar-10-python.tar.gz'}", split)
        folder = open_dataset(f"cifar10={tmp_path}", split)
        assert torch.equal(packed.images, folder.images) and torch.equal(packed.targets, folder.targets)
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": _Boom()}, f, protocol=2)
    with tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match=r"bad.tar.gz:cifar-10-batches-py/batches.meta.*refusing to load"):
        open_dataset(f"cifar10={tmp_path / 'bad.tar.gz'}", "test")
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        tar.add(tmp_path / "cifar-10-batches-py" / "test_batch", arcname="test_batch")
    with pytest.raises(DataError, match="other.tar: not the published cifar10 archive"):
        open_dataset(f"cifar10={tmp_path / 'other.tar'}", "test")


def test_cifar_binary_version_equals_the_python_batches(tmp_path: Path) -> None:
    """The binary version its authors also publish (`cifar-10-batches-bin`: a label byte and 3,072
    pixel bytes per record; CIFAR-100's `cifar-100-binary`: coarse and fine label bytes), as a folder
    and as the downloaded archive: the same images, labels and classes as the python batches."""
    import tarfile

    _write_batches(tmp_path / "cifar-10-batches-py")
    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / "cifar-10-batches-py" / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        labels = np.asarray(batch[b"labels"], np.uint8)[:, None]
        (binary / f"{name}.bin").write_bytes(np.concatenate([labels, batch[b"data"]], axis=1).tobytes())
    (binary / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(binary, arcname="cifar-10-batches-bin")
    for split in ("train", "val", "test"):
        python = open_dataset(f"cifar10={tmp_path}", split)
        for spec in (f"cifar10={tmp_path / 'bin'}", f"cifar10={binary}",
                     f"cifar10={tmp_path / 'cifar-10-binary.tar.gz'}"):
            other = open_dataset(spec, split)
            assert torch.equal(other.images, python.images) and torch.equal(other.targets, python.targets)
            assert other.classes == python.classes == list(CIFAR10_CLASSES)
    with tarfile.open(tmp_path / "partial.tar", "w") as tar:  # the binary version without its class names
        tar.add(binary / "test_batch.bin", arcname="cifar-10-batches-bin/test_batch.bin")
    with pytest.raises(DataError, match=r"partial.tar: not the published cifar10 archive \(no "
                                        r"cifar-10-batches-bin/batches.meta.txt\)"):
        open_dataset(f"cifar10={tmp_path / 'partial.tar'}", "test")
    (binary / "test_batch.bin").write_bytes((binary / "test_batch.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match=r"test_batch.bin: 61455 bytes is not a whole number of 3073-byte CIFAR"):
        open_dataset(f"cifar10={binary}", "test")
    # CIFAR-100: coarse label, fine label, pixels; the fine labels are the classes
    hundred = tmp_path / "cifar-100-binary"
    hundred.mkdir()
    rng = np.random.default_rng(1)
    pixels, fine = rng.integers(0, 256, (30, 3072), dtype=np.uint8), rng.integers(0, 100, 30, dtype=np.uint8)
    for split in ("train", "test"):
        (hundred / f"{split}.bin").write_bytes(np.concatenate([(fine // 5)[:, None], fine[:, None], pixels], 1).tobytes())
    (hundred / "fine_label_names.txt").write_text("".join(f"class{i:03d}\n" for i in range(100)))
    test = open_dataset(f"cifar100={tmp_path}", "test")
    assert test.targets.tolist() == fine.tolist() and test.classes[7] == "class007"
    assert torch.equal(test.images, torch.from_numpy(pixels).view(-1, 3, 32, 32))


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/resnetlab-pwned",))


def test_cifar_batch_that_runs_code_is_refused(tmp_path: Path) -> None:
    _write_batches(tmp_path / "c10")
    marker = tmp_path / "pwned"
    with open(tmp_path / "c10" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Boom(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_1.*refusing to load"):
        open_dataset(f"cifar10={tmp_path / 'c10'}")
    assert not marker.exists()


def test_cifar_folder_canonical_class_order(tmp_path: Path) -> None:
    # created in reverse order: the listing order must not matter
    write_image_folder(tmp_path / "train", list(reversed(CIFAR10_CLASSES)), per_class=2)
    data = open_dataset(f"cifar10={tmp_path}", "train")
    assert data.classes == list(CIFAR10_CLASSES)
    assert data.targets.tolist() == [i for i in range(10) for _ in range(2)]
    first = np.asarray(Image.open(tmp_path / "train" / "airplane" / "0000.png"))
    assert torch.equal(data.images[0], torch.from_numpy(first.copy()).permute(2, 0, 1))
    # second open is served from the decoded cache
    cached = open_dataset(f"cifar10={tmp_path}", "train")
    assert torch.equal(cached.images, data.images)
    with pytest.raises(DataError, match="no test/ folder"):
        open_dataset(f"cifar10={tmp_path}", "test")


def test_cifar_folder_cache_is_used_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "train", list(CIFAR10_CLASSES), per_class=1)
    open_dataset(f"cifar10={tmp_path}")
    monkeypatch.setattr(images_mod, "decode_images", lambda *a, **k: pytest.fail("cache not used"))
    open_dataset(f"cifar10={tmp_path}")
    Image.new("RGB", (32, 32), "red").save(tmp_path / "train" / "cat" / "0000.png")  # content changed
    os.utime(tmp_path / "train" / "cat" / "0000.png", ns=(1, 1))
    with pytest.raises(pytest.fail.Exception, match="cache not used"):
        open_dataset(f"cifar10={tmp_path}")


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_dataset(f"cifar10={tmp_path / 'missing'}")
    with pytest.raises(DataError, match="neither"):
        open_dataset(f"cifar10={tmp_path}")
    write_image_folder(tmp_path / "wrong" / "train", ["a", "b"], per_class=1)
    with pytest.raises(DataError, match="not the CIFAR-10 classes"):
        open_dataset(f"cifar10={tmp_path / 'wrong'}")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_dataset(f"folder={tmp_path / 'empty'}")
    with pytest.raises(DataError, match="unknown data set"):
        open_dataset("mnist")
    with pytest.raises(DataError, match="needs a path"):
        open_dataset("cifar10")
    with pytest.raises(DataError, match="unknown split"):
        open_dataset("digits", "training")


def test_corrupt_and_non_image_files_are_named(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", list(CIFAR10_CLASSES), per_class=1, fmt="jpg")
    bad = tmp_path / "train" / "dog" / "0001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=f"{bad}.*not a readable image"):
        open_dataset(f"cifar10={tmp_path}")
    good = (tmp_path / "train" / "cat" / "0000.jpg").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=str(bad)):
        open_dataset(f"cifar10={tmp_path}")
    bad.unlink()
    Image.new("RGB", (40, 40)).save(tmp_path / "train" / "dog" / "0002.jpg")
    with pytest.raises(DataError, match="0002.jpg: image is 40x40, expected 32x32"):
        open_dataset(f"cifar10={tmp_path}")


def test_image_folder_lazy_and_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "train", ["n01", "n02"], per_class=2, size=48, fmt="jpg")
    write_image_folder(tmp_path / "val", ["n01", "n02"], per_class=1, size=40)
    train = open_dataset(f"imagenet={tmp_path}", "train")
    assert train.images is None and len(train) == 4 and train.classes == ["n01", "n02"]
    image, target = train[3]
    assert image.shape == (3, 48, 48) and image.dtype == torch.uint8 and target == 1
    val = open_dataset(f"imagenet={tmp_path}", "val")
    assert len(val) == 2 and val.subset([1])[0][1] == 1
    assert len(open_train_val(f"imagenet={tmp_path}")[1]) == 2
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="exceeds the limit"):
        train[0]


def test_shared_cifar10_jpeg_copy(cifar10_jpeg_root: Path) -> None:
    train = open_dataset(f"cifar10={cifar10_jpeg_root}", "train")
    assert train.images.shape == (50_000, 3, 32, 32) and train.classes == list(CIFAR10_CLASSES)
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 5000))
    part, val = open_train_val(f"cifar10={cifar10_jpeg_root}")
    assert (len(part), len(val)) == (45_000, 5_000)


from hypothesis import given, settings, strategies as st

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.startswith("."))


@settings(max_examples=25, deadline=None)
@given(layout=st.dictionaries(_names, st.lists(st.tuples(_names, st.sampled_from([".jpg", ".PNG", ".txt", ""])),
                                               max_size=4, unique_by=lambda t: (t[0] + t[1]).lower()),
                              min_size=1, max_size=5))
def test_folder_scanner_properties(tmp_path_factory: pytest.TempPathFactory, layout: dict) -> None:
    """Any layout: classes are the sorted non-hidden folders; exactly the image-extension files
    are listed, each labelled with its folder; an image-less class is refused by name."""
    from resnetlab.data.images import scan_image_folder

    root = tmp_path_factory.mktemp("scan")
    (root / ".hidden").mkdir()
    for cls, files in layout.items():
        (root / cls).mkdir()
        for stem, ext in files:
            (root / cls / (stem + ext)).write_bytes(b"x")
    expected = {cls: sorted(s + e for s, e in files if e.lower() in (".jpg", ".png")) for cls, files in layout.items()}
    if any(not v for v in expected.values()):
        with pytest.raises(DataError, match="holds no images"):
            scan_image_folder(root)
        return
    classes, paths, targets = scan_image_folder(root)
    assert classes == sorted(layout)
    assert [Path(p).name for p in paths] == [f for c in classes for f in expected[c]]
    assert [classes[t] for t in targets] == [Path(p).parent.name for p in paths]


# ----------------------------------------------------------------------------- ImageNet's flat validation folder

_VAL_TRUTH = [5, 999, 0, 217, 1, 500]  # class indices (sorted synset order) of ILSVRC2012_val_00000001..6


def _devkit_files(order: list[str]) -> tuple[bytes, bytes]:
    """The devkit's ground truth and meta.mat, its classes numbered 1..1000 in ``order`` (the devkit's
    own order is not the sorted one), with non-leaf synsets after them as in the real file."""
    import scipy.io

    rows = [(number, wnid, 0) for number, wnid in enumerate(order, start=1)]
    rows += [(1001, "n00001740", 3), (1002, "n00002137", 5)]  # "entity", "abstraction": not classes
    synsets = np.zeros((len(rows),), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, row in enumerate(rows):
        synsets[i] = row
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{order.index(IMAGENET_WNIDS[t]) + 1}\n" for t in _VAL_TRUTH)
    return truth.encode(), meta.getvalue()


def _label_file(root: Path, kind: str) -> None:
    wnids = [IMAGENET_WNIDS[t] for t in _VAL_TRUTH]
    if kind == "kaggle":
        rows = [f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 5 6 7 8" for n, w in enumerate(wnids, start=1)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    elif kind == "synset per line":
        (root / "imagenet_2012_validation_synset_labels.txt").write_text("\n".join(wnids) + "\n")
    elif kind == "caffe":
        (root / "val.txt").write_text("".join(f"ILSVRC2012_val_{n:08d}.JPEG {t}\n"
                                              for n, t in enumerate(_VAL_TRUTH, start=1)))
    else:
        order = list(IMAGENET_WNIDS)
        random.Random(0).shuffle(order)
        truth, meta = _devkit_files(order)
        if kind == "devkit folder":
            (root / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
            (root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").write_bytes(truth)
            (root / "ILSVRC2012_devkit_t12/data/meta.mat").write_bytes(meta)
        else:
            with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
                for name, data in (("ILSVRC2012_validation_ground_truth.txt", truth), ("meta.mat", meta)):
                    info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/data/{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["kaggle", "devkit archive", "devkit folder", "synset per line", "caffe"])
def test_imagenet_flat_validation_folder_takes_its_published_labels(tmp_path, kind):
    """ILSVRC2012_img_val.tar unpacks to 50,000 images in one folder: `imagenet=PATH --split val`
    labels them from the list the user has (Kaggle's csv, the devkit with its own class numbers, a
    synset per line, Caffe's val.txt), beside the folder or in it, or PATH naming the folder itself."""
    (tmp_path / "val").mkdir()
    for n in range(1, len(_VAL_TRUTH) + 1):
        Image.new("RGB", (40, 30), (n * 30, 0, 0)).save(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    _label_file(tmp_path, kind)
    val = open_dataset(f"imagenet={tmp_path}", "val")
    assert val.classes == list(IMAGENET_WNIDS) and val.targets.tolist() == _VAL_TRUTH
    image, target = val[3]
    assert image.shape == (3, 30, 40) and target == 217
    direct = open_dataset(f"imagenet={tmp_path / 'val'}", "val")  # the labels beside the named folder
    assert direct.targets.tolist() == _VAL_TRUTH


def test_imagenet_flat_validation_folder_refusals(tmp_path):
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000007.JPEG")
    with pytest.raises(DataError, match=r"val holds images but no class folders; labels .* come from one of "
                                        r"LOC_val_solution.csv, ILSVRC2012_devkit_t12.tar.gz"):
        open_dataset(f"imagenet={tmp_path}", "val")
    _label_file(tmp_path, "synset per line")  # labels images 1..6, not 7
    with pytest.raises(DataError, match=r"1 of 1 images have no label in .*synset_labels.txt "
                                        r"\(first: ILSVRC2012_val_00000007.JPEG"):
        open_dataset(f"imagenet={tmp_path}", "val")
    (tmp_path / "imagenet_2012_validation_synset_labels.txt").write_text("n01440764\ntench\n")
    with pytest.raises(DataError, match="'tench' is not one of ImageNet's 1,000 synset ids"):
        open_dataset(f"imagenet={tmp_path}", "val")
    (tmp_path / "imagenet_2012_validation_synset_labels.txt").unlink()
    (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="ILSVRC2012_devkit_t12.tar.gz: not a readable ILSVRC-2012 devkit"):
        open_dataset(f"imagenet={tmp_path}", "val")
