"""Detection data: COCO ``instances_*.json``, Pascal VOC XML, and the synthetic ``shapes`` set.

Every reader gives a :class:`DetectionSet`: class names (label 0 is the background, as
torchvision's detectors count), the data set's own id of each class (COCO's 1..90 with gaps),
and one :class:`DetectionRecord` per image with its boxes as ``[x1, y1, x2, y2]`` in pixels of
the original image (continuous coordinates: a box covers ``x1 <= x < x2``).  ``--data`` specs:

- ``coco=PATH``: ``PATH/annotations/instances_{split}.json`` and the images it names, under
  ``PATH/{split}/`` or relative to ``PATH``.  A split without its year (``train``) takes the
  one year present (``instances_train2017.json`` or ``instances_train2014.json``); both
  present is refused: name the year.  The split read is recorded in :attr:`DetectionSet.split`.
- ``voc=PATH``: a VOCdevkit year folder (``Annotations/``, ``JPEGImages/``,
  ``ImageSets/Main/{split}.txt``; a folder holding ``VOC2007/`` etc. is searched too), or any
  folder of images and Pascal VOC XML files as labelling tools write them: side by side, or in
  sibling folders (``images/`` + ``annotations/``), matched by file name, classes named by the
  XML files (sorted), and without ``ImageSets`` a seeded split: ``val`` is a fixed 20 % of the
  matched images (:data:`VOC_FOLDER_VAL_FRACTION`), ``train`` the rest, ``trainval`` all.
  Files without a partner are left out, counted and named (:attr:`DetectionSet.left_out`).
- ``shapes``: the synthetic set, generated once into the cache folder.

A corrupt image or annotation is one :class:`DataError` naming the file, or, with
``skip_bad_images=True``, the item is skipped and counted in :attr:`DetectionSet.skipped`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.datasets import holdout_split
from ..data.images import IMAGE_EXTENSIONS, cache_dir, decode_image, image_size
from ..errors import DataError
from ..files import atomic_write_text

__all__ = [
    "DetectionRecord",
    "DetectionSet",
    "DETECTION_DATA",
    "SHAPES_CLASSES",
    "open_detection_data",
    "parse_detection_data",
    "read_coco",
    "read_coco_file",
    "read_voc",
    "read_voc_folder",
    "make_shapes",
    "shapes_image",
    "write_coco",
]

#: ``--data`` names of ``resnetlab detect`` and whether they take ``=PATH``
DETECTION_DATA = {"coco": True, "voc": True, "shapes": False}
#: the 20 Pascal VOC classes in the devkit's order
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: a VOCdevkit split of one year, e.g. ``2007_trainval`` (joined by ``+``: "07+12")
VOC_YEAR_SPLIT = re.compile(r"(?:19|20)\d\d_\w+")
#: classes of the synthetic shapes set (label 1..4); colours are drawn independently of the class
SHAPES_CLASSES = ("circle", "square", "triangle", "star")
#: shapes set: image side, images per split, version of the generator (part of the cache key)
SHAPES_SIDE = 128
SHAPES_SPLITS = {"train": 800, "val": 200}
SHAPES_VERSION = 1
#: a VOC-XML folder without ImageSets: the fraction of its images in ``val``, drawn with this seed
#: (the raccoon set's author used 160/40); the same split on every machine, whatever a run's seed
VOC_FOLDER_VAL_FRACTION = 0.2
VOC_FOLDER_SPLIT_SEED = 0


@dataclass
class DetectionRecord:
    """One image and its objects: ``boxes`` N x 4 (x1, y1, x2, y2 pixels), ``labels`` in 1..K,
    ``iscrowd`` (COCO crowd regions) and ``difficult`` (VOC), both ignored by the metrics."""

    image_id: int
    path: str
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor
    iscrowd: torch.Tensor
    difficult: torch.Tensor


@dataclass
class DetectionSet(torch.utils.data.Dataset):
    """A detection data set: ``dataset[i]`` is ``(uint8 image 3 x H x W, target dict)``, the
    target holding ``boxes``, ``labels``, ``image_id`` (torchvision's detection format)."""

    name: str
    split: str
    classes: list[str]
    records: list[DetectionRecord]
    skipped: int = 0
    skip_bad_images: bool = False
    #: the data set's own id of each label 1..K (COCO's category ids; 1..K for VOC and shapes)
    category_ids: list[int] = field(default_factory=list)
    #: whether targets keep VOC "difficult" objects (py-faster-rcnn trains without them)
    keep_difficult: bool = True
    #: files left out of the set, each ``"path: why"`` (a VOC-XML folder's files without a partner, corrupt ones)
    left_out: list[str] = field(default_factory=list)
    #: the COCO instances file the set was read from ("" when it was not one)
    annotation_file: str = ""

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.classes) + 1))
        if len(self.category_ids) != len(self.classes):
            raise DataError(f"{self.name}: {len(self.category_ids)} category ids for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Decode image ``index``; a file that is not the size its annotation says is a DataError."""
        rec = self.records[index]
        image = decode_image(rec.path)
        if tuple(image.shape[1:]) != (rec.height, rec.width):
            swapped = tuple(image.shape[1:]) == (rec.width, rec.height)
            hint = " (swapped: a photo that its EXIF orientation turns, labelled unturned?)" if swapped else ""
            raise DataError(f"{rec.path}: image is {image.shape[2]}x{image.shape[1]}, its annotation says "
                            f"{rec.width}x{rec.height}{hint}")
        keep = (rec.iscrowd == 0) & ((rec.difficult == 0) | self.keep_difficult)
        target = {"boxes": rec.boxes[keep].clone(), "labels": rec.labels[keep].clone(),
                  "image_id": torch.tensor(rec.image_id)}
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """:meth:`load`; with ``skip_bad_images`` a corrupt image gives ``None`` and is counted."""
        try:
            return self.load(index)
        except DataError:
            if not self.skip_bad_images:
                raise
            self.skipped += 1
            return None

    def coco_ground_truth(self) -> dict[str, Any]:
        """The set as a COCO ``instances`` dict (boxes ``[x, y, w, h]``, the data set's own category
        ids), for pycocotools.  VOC ``difficult`` objects become ``iscrowd=1`` regions: a detection
        on them is neither a true nor a false positive, the closest COCO has to VOC's "ignored"."""
        images, annotations = [], []
        for rec in self.records:
            images.append({"id": rec.image_id, "width": rec.width, "height": rec.height,
                           "file_name": os.path.basename(rec.path)})
            for box, label, crowd, hard in zip(rec.boxes.tolist(), rec.labels.tolist(), rec.iscrowd.tolist(),
                                               rec.difficult.tolist()):
                x1, y1, x2, y2 = box
                annotations.append({"id": len(annotations) + 1, "image_id": rec.image_id,
                                    "category_id": self.category_ids[label - 1],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": int(crowd or hard)})
        categories = [{"id": cid, "name": c} for cid, c in zip(self.category_ids, self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


def _splits(present: Sequence[str]) -> str:
    """The end of a missing-split message: the splits a folder has and how to choose them."""
    return f"the splits there: {', '.join(present) or 'none'} (choose them with train_split=NAME val_split=NAME)"


def _record(image_id: int, path: Path, width: int, height: int, objects: list[tuple], where: str) -> DetectionRecord:
    """Check ``objects`` ``(x1, y1, x2, y2, label, iscrowd, difficult)`` against the image size."""
    for x1, y1, x2, y2, *_ in objects:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            raise DataError(f"{where}: box {[x1, y1, x2, y2]} is empty or not finite")
    boxes = torch.tensor([o[:4] for o in objects], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return DetectionRecord(
        image_id, str(path), width, height, boxes,
        torch.tensor([o[4] for o in objects], dtype=torch.int64),
        torch.tensor([o[5] for o in objects], dtype=torch.uint8),
        torch.tensor([o[6] for o in objects], dtype=torch.uint8),
    )


#: the annotation file of one split in Roboflow's COCO export (``train/``, ``valid/``, ``test/``, each
#: holding its images and this file)
COCO_EXPORT_FILE = "_annotations.coco.json"


def _coco_annotations(root: Path, split: str) -> tuple[Path, str]:
    """``(instances file, split)`` of ``split``: ``root/annotations/instances_{split}.json`` if it
    exists, else the one year of it present (2017 or 2014; both present is refused), else an
    export's ``root/{split}/_annotations.coco.json`` (``val`` also finds ``valid/``)."""
    exact = root / "annotations" / f"instances_{split}.json"
    if exact.is_file():
        return exact, split
    years = [(root / "annotations" / f"instances_{split}{y}.json", f"{split}{y}") for y in ("2017", "2014")]
    found = [(path, name) for path, name in years if path.is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: both {found[0][0].name} and {found[1][0].name} exist; name the split you mean: "
                        f"{found[0][1]} or {found[1][1]} (the paper trained on train2014, 80k images)")
    for name in (split, "valid") if split == "val" else (split,):
        if not found and (root / name / COCO_EXPORT_FILE).is_file():
            found = [(root / name / COCO_EXPORT_FILE, name)]
    if not found:
        present = sorted([p.stem.removeprefix("instances_") for p in (root / "annotations").glob("instances_*.json")]
                         + [p.parent.name for p in root.glob(f"*/{COCO_EXPORT_FILE}")])
        raise DataError(f"{root}: no annotations/instances_{split}.json or {split}/{COCO_EXPORT_FILE} (a COCO folder "
                        f"holds annotations/instances_{{train,val}}.json and the images they name); {_splits(present)}")
    return found[0]


def read_coco_file(ann_path: str | os.PathLike, folders: Sequence[Path], split: str, skip_bad_images: bool = False,
                   name: str = "coco") -> DetectionSet:
    """The COCO instances file ``ann_path``; each image is looked up in ``folders`` in turn (its
    ``file_name`` relative to each).  Images are not opened here: a set read only for its
    ground truth (``resnetlab detect score``) needs none."""
    ann_path = Path(ann_path)
    try:
        data = json.loads(ann_path.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
        anns = data.get("annotations", [])
        cat_ids = [int(c["id"]) for c in categories]
        classes = [str(c["name"]) for c in categories]
        label_of = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        by_image: dict[int, list[tuple]] = {int(im["id"]): [] for im in images}
        bad_ann = 0
        for a in anns:
            x, y, w, h = (float(v) for v in a["bbox"])
            if int(a["category_id"]) not in label_of:
                raise DataError(f"{ann_path}: annotation {a.get('id')} has category_id {a['category_id']}, "
                                "which is not in its categories")
            obj = (x, y, x + w, y + h, label_of[int(a["category_id"])], int(a.get("iscrowd", 0)), 0)
            if w <= 0 or h <= 0 or not all(math.isfinite(v) for v in (x, y, w, h)):
                if not skip_bad_images:
                    raise DataError(f"{ann_path}: annotation {a.get('id')} has the empty or non-finite box {a['bbox']}")
                bad_ann += 1
                continue
            by_image[int(a["image_id"])].append(obj)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{ann_path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{ann_path}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
    records = []
    for im in images:
        rel = str(im["file_name"])
        path = next((f / rel for f in folders if (f / rel).is_file()), folders[0] / rel)
        try:
            records.append(_record(int(im["id"]), path, int(im["width"]), int(im["height"]),
                                   by_image[int(im["id"])], f"{ann_path} (image {im['id']})"))
        except DataError:
            if not skip_bad_images:
                raise
            bad_ann += 1
    return DetectionSet(name, split, classes, records, skipped=bad_ann, skip_bad_images=skip_bad_images,
                        category_ids=cat_ids, annotation_file=str(ann_path))


def read_coco(root: str | os.PathLike, split: str, skip_bad_images: bool = False, name: str = "coco") -> DetectionSet:
    """``root/annotations/instances_{split}.json`` (or the one year of ``split`` present) and its
    images under ``root/{split}/``, ``root/images/{split}/`` or ``root``; the set's ``split`` is the
    one read (``train2017`` for ``train`` when that is the year present)."""
    root = Path(root)
    ann_path, resolved = _coco_annotations(root, split)
    folders = list(dict.fromkeys([root / resolved, root / split, root / "images" / resolved, root]))
    return read_coco_file(ann_path, folders, resolved, skip_bad_images, name)


def _voc_root(root: Path) -> Path | None:
    """The VOCdevkit year folder at or under ``root`` (``Annotations/`` beside ``ImageSets/Main/``), or None."""
    for sub in ("", "VOC2007", "VOC2012", "VOCdevkit/VOC2007", "VOCdevkit/VOC2012"):
        if (root / sub / "Annotations").is_dir() and (root / sub / "ImageSets" / "Main").is_dir():
            return root / sub
    return None


def _voc_objects(xml_path: Path, image: Path | None = None) -> tuple[int, int, list[tuple]]:
    """``(width, height, objects)`` of one Pascal VOC XML file; each object ``(x1, y1, x2, y2, name,
    difficult)`` in continuous coordinates.  VOC boxes are 1-based inclusive pixel indices, so
    ``(xmin - 1, ymin - 1, xmax, ymax)`` is the same box, and areas and overlaps equal the devkit's
    ``+1`` formulas.  A file without ``<size>``, or with width or height 0 (labelImg writes that
    for some images), takes the size of its ``image`` from the image's header (0 x 0 without one)."""
    try:
        tree = ET.parse(xml_path).getroot()
        size = tree.find("size")
        width, height = (0, 0) if size is None else (int(float(size.findtext(k) or 0)) for k in ("width", "height"))
        objects = []
        for obj in tree.iter("object"):
            name = obj.findtext("name").strip()
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            objects.append((x1 - 1, y1 - 1, x2, y2, name, int(obj.findtext("difficult") or 0)))
    except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"{xml_path}: unreadable VOC annotation ({type(exc).__name__}: {exc})") from None
    if width == 0 or height == 0:
        return (*image_size(image), objects) if image is not None else (0, 0, objects)
    if width < 0 or height < 0:
        raise DataError(f"{xml_path}: image size {width}x{height} in <size>")
    return width, height, objects


def _voc_classes(found: Path, names: set[str], read: set[Path]) -> list[str]:
    """VOC's 20 classes in the devkit's order when every object is one of them; otherwise (a data set
    of one's own in the devkit layout, as labelling tools export it) the names in all of
    ``Annotations/``, sorted, so that every split of the folder gets the same labels.  ``names`` are
    those of the XML files ``read`` already (not parsed again)."""
    if names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    for xml_path in sorted(set((found / "Annotations").glob("*.xml")) - read):
        try:
            names |= {obj[4] for obj in _voc_objects(xml_path)[2]}
        except DataError:
            continue  # unreadable files are named by the split that lists them
    return sorted(names)


def _voc_image(found: Path, image_id: str) -> Path:
    """``JPEGImages/{id}.jpg``, or the image of that id with another extension (``.png``, ``.jpeg``)."""
    jpg = found / "JPEGImages" / f"{image_id}.jpg"
    if jpg.is_file():
        return jpg
    return next((p for ext in IMAGE_EXTENSIONS if (p := found / "JPEGImages" / f"{image_id}{ext}").is_file()), jpg)


def read_voc(root: str | os.PathLike, split: str, skip_bad_images: bool = False) -> DetectionSet:
    """The VOCdevkit layout: ``ImageSets/Main/{split}.txt`` lists the ids; ``Annotations/{id}.xml``
    their objects, ``JPEGImages/{id}.jpg`` (or another image extension) the images; the 20 classes
    in the devkit's order, or a data set's own classes (:func:`_voc_classes`)."""
    found = _voc_root(Path(root))
    if found is None:
        raise DataError(f"{root}: not a Pascal VOC folder (expected Annotations/, JPEGImages/, ImageSets/Main/)")
    listing = found / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        stems = {p.stem for p in listing.parent.glob("*.txt")}
        # per-class listings (aeroplane_train.txt beside train.txt) are not splits
        present = sorted(s for s in stems if s.rpartition("_")[2] not in stems - {s})
        raise DataError(f"{found}: no ImageSets/Main/{split}.txt; {_splits(present)}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    parsed, left_out = {}, []
    for index, image_name in enumerate(ids):
        xml_path = found / "Annotations" / f"{image_name}.xml"
        try:
            parsed[index] = (image_name, xml_path, _voc_objects(xml_path, _voc_image(found, image_name)))
        except DataError as exc:
            if not skip_bad_images:
                raise
            left_out.append(str(exc))
    classes = _voc_classes(found, {obj[4] for *_, (_, _, objects) in parsed.values() for obj in objects},
                           {xml_path for _, xml_path, _ in parsed.values()})
    label_of = {c: i + 1 for i, c in enumerate(classes)}
    records = []
    for index, (image_name, xml_path, (width, height, objects)) in parsed.items():
        try:
            records.append(_record(index, _voc_image(found, image_name), width, height,
                                   [(x1, y1, x2, y2, label_of[n], 0, hard) for x1, y1, x2, y2, n, hard in objects],
                                   str(xml_path)))
        except DataError as exc:
            if not skip_bad_images:
                raise
            left_out.append(str(exc))
    return DetectionSet("voc", split, classes, records, skipped=len(left_out),
                        skip_bad_images=skip_bad_images, left_out=left_out)


def _pair_files(root: Path) -> tuple[dict[str, tuple[Path, Path]], list[str]]:
    """Images and XML files of ``root`` and of its sub-folders one level down, paired by file name
    (stem): ``({stem: (image, xml)}, left out as "path: why")``."""
    images: dict[str, list[Path]] = {}
    xmls: dict[str, list[Path]] = {}
    for folder in [root, *sorted(d for d in root.iterdir() if d.is_dir())]:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() == ".xml":
                xmls.setdefault(path.stem, []).append(path)
            elif path.is_file() and path.name.lower().endswith(IMAGE_EXTENSIONS):
                images.setdefault(path.stem, []).append(path)
    pairs, left_out = {}, []
    for stem in sorted(set(images) | set(xmls)):
        ims, xs = images.get(stem, []), xmls.get(stem, [])
        if len(ims) > 1 or len(xs) > 1:
            left_out += [f"{p}: ambiguous, {len(ims)} images and {len(xs)} XML files named {stem}" for p in ims + xs]
        elif not xs:
            left_out.append(f"{ims[0]}: no XML annotation of the same name")
        elif not ims:
            left_out.append(f"{xs[0]}: no image of the same name")
        else:
            pairs[stem] = (ims[0], xs[0])
    return pairs, left_out


def read_voc_folder(root: str | os.PathLike, split: str, skip_bad_images: bool = False) -> DetectionSet:
    """Any folder of images and Pascal VOC XML files (side by side, or in sibling folders such as
    ``images/`` + ``annotations/``), paired by file name.  The classes are the names in the XML
    files, sorted; ``split`` is ``train``, ``val`` (a fixed :data:`VOC_FOLDER_VAL_FRACTION` of the
    pairs, seeded) or ``trainval`` (all).  Files without a partner are left out and named in
    :attr:`DetectionSet.left_out`; an unreadable XML file is a :class:`DataError`, or left out and
    counted in ``skipped`` with ``skip_bad_images``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"VOC folder not found: {root}")
    if split not in ("train", "val", "trainval"):
        raise DataError(f"{root}: a folder without ImageSets/Main has the splits train, val (a seeded "
                        f"{VOC_FOLDER_VAL_FRACTION:.0%} of the images) and trainval, not {split!r}")
    pairs, left_out = _pair_files(root)
    parsed, skipped = {}, []
    for stem, (image, xml_path) in pairs.items():
        try:
            parsed[stem] = _voc_objects(xml_path, image)
        except DataError as exc:
            if not skip_bad_images:
                raise
            skipped.append(str(exc))
    classes = sorted({obj[4] for _, _, objects in parsed.values() for obj in objects})
    label_of = {c: i + 1 for i, c in enumerate(classes)}
    records = []
    for stem, (width, height, objects) in sorted(parsed.items()):
        image, xml_path = pairs[stem]
        try:
            records.append(_record(len(records), image, width, height,
                                   [(x1, y1, x2, y2, label_of[n], 0, hard) for x1, y1, x2, y2, n, hard in objects],
                                   str(xml_path)))
        except DataError as exc:
            if not skip_bad_images:
                raise
            skipped.append(str(exc))
    if not records:
        raise DataError(f"{root}: no image with a Pascal VOC XML file of the same name (in the folder or its "
                        f"sub-folders); {len(left_out)} unpaired files")
    train, val = holdout_split(len(records), VOC_FOLDER_VAL_FRACTION, VOC_FOLDER_SPLIT_SEED)
    chosen = {"train": train.tolist(), "val": val.tolist(), "trainval": list(range(len(records)))}[split]
    return DetectionSet("voc", split, classes, [records[i] for i in chosen], skipped=len(skipped),
                        skip_bad_images=skip_bad_images, left_out=left_out + skipped)


# ----------------------------------------------------------------------------- synthetic shapes


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A textured background: two random colours mixed by sinusoidal stripes and blobs, plus noise."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    mix = np.zeros((side, side), np.float32)
    for _ in range(3):
        fx, fy, phase = rng.uniform(-12, 12), rng.uniform(-12, 12), rng.uniform(0, 2 * np.pi)
        mix += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    mix = (mix - mix.min()) / (np.ptp(mix) + 1e-6)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = a[None, None] * mix[..., None] + b[None, None] * (1 - mix[..., None])
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        return [(cx + r * x, cy + r * y) for x, y in corners]
    if kind == "triangle":
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)]
    # star: 5 points, inner radius 0.45 r
    return [(cx + (r if k % 2 == 0 else 0.45 * r) * math.cos(angle + k * math.pi / 5),
             cy + (r if k % 2 == 0 else 0.45 * r) * math.sin(angle + k * math.pi / 5)) for k in range(10)]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def shapes_image(seed: int, index: int, side: int = SHAPES_SIDE) -> tuple[Image.Image, list[tuple]]:
    """One image: 1-4 filled shapes of random class, colour (independent of the class), size and
    place on a textured background; shapes may overlap (box IoU up to 0.3, later ones in front)."""
    rng = np.random.default_rng([seed, index])
    image = Image.fromarray(_background(rng, side))
    draw = ImageDraw.Draw(image)
    objects: list[tuple] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            label = int(rng.integers(len(SHAPES_CLASSES)))
            r = float(rng.uniform(0.09, 0.25) * side)
            cx, cy = (float(v) for v in rng.uniform(r, side - r, 2))
            angle = float(rng.uniform(0, 2 * np.pi))
            kind = SHAPES_CLASSES[label]
            points = None if kind == "circle" else _shape_polygon(kind, cx, cy, r, angle)
            if points is None:
                box = [cx - r, cy - r, cx + r, cy + r]
            else:
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                box = [min(xs), min(ys), max(xs), max(ys)]
            if all(_iou(box, o[:4]) <= 0.3 for o in objects):
                break
        else:
            continue
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if points is None:
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon(points, fill=colour)
        objects.append((*box, label + 1, 0, 0))
    return image, objects


def write_coco(root: Path, split: str, items: Sequence[tuple[Image.Image, list[tuple]]], classes: Sequence[str],
               first_id: int = 0, description: str = "") -> None:
    """Write ``items`` (PIL image, objects ``(x1, y1, x2, y2, label, iscrowd, difficult)``) as
    ``root/split/NNNNNN.jpg`` and ``root/annotations/instances_{split}.json`` (the ``coco=PATH`` layout)."""
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (image, objects) in enumerate(items):
        name = f"{i:06d}.jpg"
        image.save(root / split / name, quality=92)
        images.append({"id": first_id + i, "file_name": name, "width": image.width, "height": image.height})
        for x1, y1, x2, y2, label, crowd, _ in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": first_id + i, "category_id": label,
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": crowd})
    body = {"info": {"description": description}, "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    atomic_write_text(root / "annotations" / f"instances_{split}.json", json.dumps(body))


def make_shapes(seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """Generate the shapes set (deterministic in ``seed``) as JPEG files and COCO JSON, once.

    Written to ``root`` (default ``cache_dir()/shapes/v{VERSION}-seed{seed}``) in the ``coco=PATH``
    layout: ``train/``, ``val/``, ``annotations/instances_{train,val}.json``.  The folder is built
    in a temporary sibling and renamed into place, so a crash never leaves half a data set.
    """
    root = Path(root) if root is not None else cache_dir() / "shapes" / f"v{SHAPES_VERSION}-seed{seed}"
    if (root / "annotations" / "instances_val.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for split_index, (split, count) in enumerate(SHAPES_SPLITS.items()):
            items = [shapes_image(seed, split_index * 1_000_000 + i) for i in range(count)]
            write_coco(tmp, split, items, SHAPES_CLASSES, first_id=split_index * 1_000_000,
                       description=f"resnetlab synthetic shapes v{SHAPES_VERSION}, seed {seed}")
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _voc_years(root: Path, split: str, skip_bad_images: bool) -> DetectionSet:
    """``2007_trainval+2012_trainval`` (Faster R-CNN's "07+12"): the union of ``VOC<year>`` splits
    under ``root`` (a ``VOCdevkit`` folder); image ids are renumbered to stay unique."""
    records, skipped, left_out, classes = [], 0, [], None
    for part in split.split("+"):
        year, _, name = part.partition("_")
        candidates = [root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root]
        folder = next((c for c in candidates if c.name == f"VOC{year}" and c.is_dir()), candidates[0])
        data = read_voc(folder, name, skip_bad_images)
        if classes is not None and data.classes != classes:
            raise DataError(f"{folder}: the classes of {part} differ from those of the splits before it")
        classes = data.classes
        skipped += data.skipped
        left_out += data.left_out
        for rec in data.records:
            records.append(dataclasses.replace(rec, image_id=len(records)))
    return DetectionSet("voc", split, list(classes or VOC_CLASSES), records, skipped=skipped,
                        skip_bad_images=skip_bad_images, left_out=left_out)


def parse_detection_data(spec: str) -> tuple[str, Path | None]:
    """``"coco=/data/coco"`` -> ``("coco", Path(...))``; an unknown name or a missing path is a DataError."""
    name, sep, path = spec.partition("=")
    name = name.strip().lower()
    if name not in DETECTION_DATA:
        raise DataError(f"unknown detection data {spec!r}; expected coco=PATH, voc=PATH or shapes")
    if DETECTION_DATA[name] and not path:
        raise DataError(f"--data {name} needs a path: {name}=PATH")
    if not DETECTION_DATA[name] and sep:
        raise DataError(f"--data {name} takes no path")
    return name, Path(path).expanduser() if path else None


def open_detection_data(spec: str, split: str, skip_bad_images: bool = False) -> DetectionSet:
    """The ``split`` of the detection data named by ``spec`` (``coco=PATH``, ``voc=PATH``: a VOCdevkit
    or any folder of images and VOC XML files, ``shapes``: the shapes set of seed 0, generated on
    first use).  Annotations are checked here;
    images when they are read (:meth:`DetectionSet.__getitem__`).
    """
    name, path = parse_detection_data(spec)
    if name == "voc" and all(VOC_YEAR_SPLIT.fullmatch(part) for part in split.split("+")):
        data = _voc_years(path, split, skip_bad_images)
    elif name == "voc" and _voc_root(path) is not None:
        data = read_voc(path, split, skip_bad_images)
    elif name == "voc":
        data = read_voc_folder(path, split, skip_bad_images)
    elif name == "coco":
        if not path.is_dir():
            raise DataError(f"COCO folder not found: {path}")
        data = read_coco(path, split, skip_bad_images)
    else:
        data = read_coco(make_shapes(0), split, skip_bad_images, name="shapes")
    if not data.records:
        raise DataError(f"{spec} {split}: no images")
    return data
