"""Detection data the way users have it: folders of images and Pascal VOC XML files (as labelling
tools write them), the real raccoon photos of ../shared read in place, and a VOC folder through
train -> eval -> score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import shared_folder
from resnetlab.cli import main
from resnetlab.detection.data import (SHAPES_CLASSES, VOC_FOLDER_VAL_FRACTION, make_shapes, open_detection_data,
                                      read_voc_folder, shapes_image)
from resnetlab.data.images import image_size
from resnetlab.detection.metrics import score_files
from resnetlab.errors import DataError


def _xml(name: str, width: int, height: int, objects: list[tuple]) -> str:
    """A LabelImg-style Pascal VOC file (1-based inclusive pixel boxes, no difficult tag on some)."""
    parts = [f"<annotation><folder>x</folder><filename>{name}</filename><path>/elsewhere/{name}</path>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for i, (x1, y1, x2, y2, label, *_) in enumerate(objects):
        hard = "" if i % 2 else "<difficult>0</difficult>"
        parts.append(f"<object><name>{SHAPES_CLASSES[label - 1]}</name><pose>Unspecified</pose>{hard}<bndbox>"
                     f"<xmin>{round(x1) + 1}</xmin><ymin>{round(y1) + 1}</ymin><xmax>{round(x2)}</xmax>"
                     f"<ymax>{round(y2)}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def voc_folder(root: Path, count: int, *, images: str = "", annotations: str = "", seed: int = 5) -> Path:
    """``count`` shapes images as JPEG files in ``root/images`` and their XML files in
    ``root/annotations`` (both "" : side by side in ``root``)."""
    for sub in (images, annotations):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, objects = shapes_image(seed, i, side=64)
        image.save(root / images / f"img{i:03d}.jpg", quality=95)
        (root / annotations / f"img{i:03d}.xml").write_text(_xml(f"img{i:03d}.jpg", 64, 64, objects))
    return root


@pytest.mark.parametrize("layout", [("", ""), ("images", "annotations"), ("JPEGImages", "Annotations")])
def test_voc_folder_pairs_files_by_name_and_splits_with_a_seed(tmp_path, layout):
    root = voc_folder(tmp_path / "set", 10, images=layout[0], annotations=layout[1])
    (root / layout[0] / "lonely.png").write_bytes((root / layout[0] / "img000.jpg").read_bytes())
    (root / layout[1] / "orphan.xml").write_text(_xml("orphan.jpg", 64, 64, []))
    train, val = (open_detection_data(f"voc={root}", split) for split in ("train", "val"))
    every = open_detection_data(f"voc={root}", "trainval")
    assert len(val) == round(10 * VOC_FOLDER_VAL_FRACTION) and len(train) + len(val) == len(every) == 10
    names = lambda d: {Path(r.path).name for r in d.records}  # noqa: E731
    assert names(train) | names(val) == names(every) and not names(train) & names(val)
    assert names(val) == names(open_detection_data(f"voc={root}", "val"))  # the same split every time
    # classes: the names in the XML files, sorted; ids 1..K; boxes from 1-based pixels to continuous ones
    assert every.classes == sorted(SHAPES_CLASSES) and every.category_ids == [1, 2, 3, 4]
    first = every.records[0]
    _, objects = shapes_image(5, 0, side=64)
    assert first.boxes[0].tolist() == [round(objects[0][0]), round(objects[0][1]), round(objects[0][2]),
                                       round(objects[0][3])]
    assert every.classes[first.labels[0] - 1] == SHAPES_CLASSES[objects[0][4] - 1]
    image, target = every[0]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(objects)
    # the files without a partner: left out, counted and named
    assert set(every.left_out) == {f"{root / layout[0] / 'lonely.png'}: no XML annotation of the same name",
                                   f"{root / layout[1] / 'orphan.xml'}: no image of the same name"}
    with pytest.raises(DataError, match="the splits train, val .* and trainval, not 'test'"):
        open_detection_data(f"voc={root}", "test")


def test_voc_folder_corrupt_files(tmp_path):
    root = voc_folder(tmp_path / "set", 6)
    (root / "img002.xml").write_text("<annotation><size>")
    (root / "img004.xml").write_text(_xml("img004.jpg", 64, 64, [(5.0, 5.0, 5.0, 20.0, 1)]))  # an empty box
    with pytest.raises(DataError, match="img002.xml: unreadable VOC annotation"):
        read_voc_folder(root, "trainval")
    lenient = read_voc_folder(root, "trainval", skip_bad_images=True)
    assert len(lenient) == 4 and lenient.skipped == 2
    assert [line.split(":")[0] for line in lenient.left_out] == [str(root / "img002.xml"), str(root / "img004.xml")]
    (root / "img001.jpg").write_bytes(b"not a jpeg")  # images are decoded when read: one error naming the file
    index = [Path(r.path).name for r in lenient.records].index("img001.jpg")
    with pytest.raises(DataError, match="img001.jpg"):
        lenient.load(index)
    assert lenient[index] is None and lenient.skipped == 3  # or skipped and counted
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image with a Pascal VOC XML file"):
        read_voc_folder(empty, "val")


def test_voc_size_zero_or_missing_is_read_from_the_image(tmp_path):
    """labelImg writes <width>0</width><height>0</height> for some images, other tools no <size>: the
    size then comes from the image's header, upright as decode_image gives it (EXIF orientation 6 turns
    a 64x32 photo into 32x64). Before, such a file was "image size 0x0" and stopped training."""
    root = voc_folder(tmp_path / "set", 4)
    xml = (root / "img001.xml").read_text()
    (root / "img001.xml").write_text(xml.replace("<width>64</width><height>64</height>",
                                                 "<width>0</width><height>0</height>"))
    (root / "img002.xml").write_text(re.sub("<size>.*?</size>", "", (root / "img002.xml").read_text()))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turned a quarter
    Image.new("RGB", (64, 32), "gray").save(root / "img003.jpg", exif=exif)
    (root / "img003.xml").write_text(_xml("img003.jpg", 0, 0, [(2.0, 3.0, 20.0, 50.0, 1)]))
    every = read_voc_folder(root, "trainval")
    sizes = {Path(r.path).name: (r.width, r.height) for r in every.records}
    assert sizes == {"img000.jpg": (64, 64), "img001.jpg": (64, 64), "img002.jpg": (64, 64), "img003.jpg": (32, 64)}
    assert image_size(root / "img003.jpg") == (32, 64) and every.load(3)[0].shape == (3, 64, 32)
    assert every.records[3].boxes.tolist() == [[2.0, 3.0, 20.0, 50.0]]  # not clamped to a 0x0 image
    (root / "img003.xml").write_text(_xml("img003.jpg", 64, 32, [(2.0, 3.0, 20.0, 30.0, 1)]))  # drawn unturned
    with pytest.raises(DataError, match=r"img003.jpg: image is 32x64, its annotation says 64x32 \(swapped: a photo"):
        read_voc_folder(root, "trainval").load(3)
    (root / "img000.xml").write_text(xml.replace("<width>64</width>", "<width>-64</width>"))
    with pytest.raises(DataError, match=r"img000.xml: image size -64x64 in <size>"):
        read_voc_folder(root, "trainval")


def test_devkit_layout_of_ones_own_classes(tmp_path):
    """A data set of one's own exported in the VOCdevkit layout (CVAT, Roboflow): ImageSets/Main lists,
    PNG images, its own class names. Before, only VOC's 20 classes and .jpg files were read."""
    root = voc_folder(tmp_path / "export", 8, images="JPEGImages", annotations="Annotations")
    (root / "JPEGImages" / "img003.jpg").rename(root / "JPEGImages" / "img003.png")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "my_train.txt").write_text("".join(f"img{i:03d}\n" for i in range(6)))
    (root / "ImageSets" / "Main" / "default.txt").write_text("img006\nimg007\n")
    zero = root / "Annotations" / "img006.xml"  # labelImg's size 0: read from JPEGImages/img006.jpg
    zero.write_text(zero.read_text().replace("<width>64</width><height>64</height>",
                                             "<width>0</width><height>0</height>"))
    train, val = (open_detection_data(f"voc={root}", split) for split in ("my_train", "default"))
    # the same labels in every split: the names of all Annotations/, sorted
    assert train.classes == val.classes == sorted(SHAPES_CLASSES) and (len(train), len(val)) == (6, 2)
    assert (val.records[0].width, val.records[0].height) == (64, 64)
    assert Path(train.records[3].path).name == "img003.png" and train[3][0].shape == (3, 64, 64)
    with pytest.raises(DataError, match=r"no ImageSets/Main/train.txt; the splits there: default, my_train "
                                        r"\(choose them with train_split=NAME val_split=NAME\)"):
        open_detection_data(f"voc={root}", "train")


def test_coco_export_with_a_file_per_split_folder(tmp_path):
    """Roboflow's COCO export: train/ and valid/ each hold their images and _annotations.coco.json;
    `val` finds valid/. A split that is not there names those that are."""
    shapes = make_shapes(0)
    for split, folder in (("train", "train"), ("val", "valid")):
        data = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        data["images"] = data["images"][:5]
        kept = {im["id"] for im in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
        (tmp_path / folder).mkdir()
        for im in data["images"]:
            (tmp_path / folder / im["file_name"]).write_bytes((shapes / split / im["file_name"]).read_bytes())
        (tmp_path / folder / "_annotations.coco.json").write_text(json.dumps(data))
    train, val = (open_detection_data(f"coco={tmp_path}", split) for split in ("train", "val"))
    assert (len(train), len(val), val.split) == (5, 5, "valid") and train.classes == list(SHAPES_CLASSES)
    assert val[0][0].shape == (3, 128, 128)
    with pytest.raises(DataError, match=r"no annotations/instances_test.json or test/_annotations.coco.json .*"
                                        r"the splits there: train, valid"):
        open_detection_data(f"coco={tmp_path}", "test")


@pytest.fixture(scope="session")
def raccoon(shared_dir: Path) -> Path:
    return shared_folder(shared_dir, "data/raccoon", "annotations", "the raccoon photos")


def test_raccoon_photos_in_place(raccoon):
    """200 real photos in images/ with LabelImg XML files in annotations/: paired by name, split 160/40."""
    train, val = (open_detection_data(f"voc={raccoon}", split) for split in ("train", "val"))
    assert (len(train), len(val)) == (160, 40) and train.classes == ["raccoon"] and not train.left_out
    assert sum(len(r.boxes) for r in train.records + val.records) == 217
    assert not {r.path for r in train.records} & {r.path for r in val.records}
    for i in range(len(val)):  # greyscale ones come out RGB, each at the size its XML file says
        image, target = val[i]
        assert image.shape[0] == 3 and len(target["boxes"]) >= 1


def test_train_eval_score_on_a_voc_folder(tmp_path, capsys):
    """A VOC-XML folder through detect train -> eval --save-dets -> score: VOC07 mAP on both sides, the
    ground truth written beside the detections (a VOC folder has no instances file)."""
    from test_detection import TINY  # the tiny detector of the detection tests

    root = voc_folder(tmp_path / "set", 10)
    (root / "notes.xml").write_text("<annotation/>")  # no image of that name: left out and named
    run = tmp_path / "run"
    assert main(["detect", "train", "shapes_demo", *TINY, "batch_size=2", "iterations=2", "milestones=[]",
                 "warmup_iterations=0", "log_every=1", "checkpoint_every=2", "--data", f"voc={root}",
                 "--out", str(run)]) == 0
    assert f"voc={root} train: 1 file left out: {root / 'notes.xml'}: no image of the same name" in \
        capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == f"voc={root}" and config["provenance"]["departures"] == []  # shapes_demo is ours
    assert config["provenance"]["splits"] == {"train": "train", "val": "val"}
    capsys.readouterr()
    dets = tmp_path / "dets.json"
    assert main(["detect", "eval", str(run / "final.safetensors"), "--data", f"voc={root}", "--save-dets", str(dets),
                 "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["n_images"] == 2 and "voc07_map" in evaluated and evaluated["gt"] == str(tmp_path / "dets.gt.json")
    scored = score_files(evaluated["gt"], dets)
    assert {k: scored[k] for k in ("map", "map50", "map75", "voc07_map")} == \
        {k: evaluated[k] for k in ("map", "map50", "map75", "voc07_map")}
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
