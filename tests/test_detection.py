"""Detection: the C4/FPN detectors, data readers, shapes, metrics (VOC07 by hand, COCO vs
pycocotools), recipes, and the train -> eval -> predict -> export path on a tiny detector."""

from __future__ import annotations

import json
import os
import random
import signal
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.ops import FrozenBatchNorm2d

import resnetlab
from resnetlab.cli import main
from resnetlab.detection import create_detector, list_detectors
from resnetlab.detection.data import (SHAPES_CLASSES, make_shapes, open_detection_data, read_coco, read_voc,
                                      shapes_image, write_coco)
from resnetlab.detection import engine
from resnetlab.detection.engine import train_detector
from resnetlab.detection.experiments import DetectionTableSettings, backbone_complexity, run_table7, run_table8
from resnetlab.detection.metrics import coco_map, coco_results, score_files, voc07_ap, voc07_map
from resnetlab.detection.recipes import DEPARTURES, DETECT_RECIPES, get_detect_recipe
from resnetlab.errors import ConfigError, DataError, TrainingError, UnknownModelError, WeightsError
from resnetlab.reproduce.experiments import EXPERIMENTS
from resnetlab.reproduce.runs import dataset_name
from resnetlab.train import Schedule

# a tiny backbone: CIFAR ResNet-8 (conv1, three stages at strides 1/2/4): trunk = conv1..layer2, head = layer3
TINY = ["backbone=cifar_resnet", 'backbone_kwargs={"depth": 8}', "trainable_stages=4", "min_size=64",
        "max_size=64", "anchor_sizes=[16,32,64]", "roi_output_size=8", "rpn_post_nms_top_n_test=30"]


#: COCO-style category ids of the shapes classes in the tiny set: with gaps and in another order than the
#: names (COCO's ids run 1..90 with gaps), so that a label used in place of the data set's id shows
COCO_IDS = {"circle": 90, "square": 3, "triangle": 17, "star": 44}


def renumber_categories(root, split, ids=COCO_IDS):
    """Give the categories of ``root``'s ``instances_{split}.json`` the ids ``ids`` (by name)."""
    path = root / "annotations" / f"instances_{split}.json"
    body = json.loads(path.read_text())
    old = {c["id"]: ids[c["name"]] for c in body["categories"]}
    body["categories"] = [dict(c, id=old[c["id"]]) for c in body["categories"]]
    body["annotations"] = [dict(a, category_id=old[a["category_id"]]) for a in body["annotations"]]
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    """A COCO folder of 12 train and 4 val shapes images at 64x64, category ids :data:`COCO_IDS`."""
    root = tmp_path_factory.mktemp("coco")
    for split, first in (("train", 0), ("val", 100)):
        count = 12 if split == "train" else 4
        write_coco(root, split, [shapes_image(3, first + i, side=64) for i in range(count)], SHAPES_CLASSES)
        renumber_categories(root, split)
    return root


# ----------------------------------------------------------------------------- detectors


def test_registered_detectors():
    assert {"fasterrcnn_resnet101_c4", "fasterrcnn_resnet50_c4", "fasterrcnn_resnet18_c4",
            "fasterrcnn_resnet50_fpn"} <= set(list_detectors())
    with pytest.raises(UnknownModelError, match="unknown detector"):
        create_detector("fasterrcnn_resnet7", 3)
    with pytest.raises(ConfigError, match="num_classes"):
        create_detector("fasterrcnn_resnet18_c4", 0)


def test_c4_is_the_papers_design():
    det = create_detector("fasterrcnn_resnet18_c4", 5, min_size=64, max_size=96)
    trunk, head = det.backbone, det.roi_heads.box_head
    # conv1..conv4_x shared at stride 16; conv5_x (first block striding) + global average pool per region
    assert trunk.reduction == 16 and trunk.out_channels == 256 and len(trunk.body) == 4
    assert head.stage.layer4[0].conv1.stride == (2, 2) and head.out_channels == 512
    assert det.roi_heads.box_predictor.cls_score.out_features == 6  # 5 classes + background
    assert det.roi_heads.box_predictor.bbox_pred.out_features == 24
    assert det.rpn.anchor_generator.num_anchors_per_location() == [9]  # 3 scales x 3 ratios
    assert det.transform.min_size == (64,) and det.transform.max_size == 96
    # BN is a constant scale and shift everywhere; conv1 and conv2_x are frozen
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in det.modules()) > 10
    frozen = [n for n, p in det.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.body.0.", "backbone.body.1.")) for n in frozen)
    assert any(p.requires_grad for p in trunk.body[2].parameters())
    full = create_detector("fasterrcnn_resnet18_c4", 5, trainable_stages=5)
    assert all(p.requires_grad for p in full.parameters())
    assert type(create_detector("fasterrcnn_resnet18_c4", 5, roi_pool="roialign").roi_heads.box_roi_pool).__name__ == "C4RoIPool"
    with pytest.raises(ConfigError, match="trainable_stages"):
        create_detector("fasterrcnn_resnet18_c4", 5, trainable_stages=6)
    with pytest.raises(ConfigError, match="roi_pool"):
        create_detector("fasterrcnn_resnet18_c4", 5, roi_pool="max")


@pytest.mark.parametrize("align", [False, True])
def test_c4_forward_train_and_eval(align):
    det = create_detector("fasterrcnn_resnet18_c4", 2, roi_pool="roialign" if align else "roipool", min_size=96,
                          max_size=128, anchor_sizes=(16, 32, 64), rpn_post_nms_top_n_test=20,
                          rpn_post_nms_top_n_train=40, box_batch_size_per_image=16)
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = det.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    out = det.eval()(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert (out[1]["boxes"][:, 2] <= 100 + 1e-3).all()  # original pixels of the second image


def test_fpn_and_other_backbones():
    fpn = create_detector("fasterrcnn_resnet50_fpn", 3, min_size=64, max_size=64)
    assert fpn.backbone.body.feature_info.reduction() == [4, 8, 16, 32]
    assert fpn.rpn.anchor_generator.num_anchors_per_location() == [3] * 5
    out = fpn.eval()([torch.rand(3, 64, 64)])
    assert out[0]["boxes"].shape[1] == 4
    vgg = create_detector("fasterrcnn_resnet18_c4", 3, backbone="vgg11", frozen_bn=False)
    assert vgg.backbone.reduction == 16 and vgg.backbone.out_channels == 512
    with pytest.raises(ConfigError, match="alexnet"):
        create_detector("fasterrcnn_resnet18_c4", 3, backbone="alexnet")


def test_backbone_weights_fit_or_are_refused(tmp_path):
    net = resnetlab.create_model("resnet18", num_classes=10)
    path = tmp_path / "r18.safetensors"
    resnetlab.save_weights(net, path, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    det = create_detector("fasterrcnn_resnet18_c4", 3, backbone_weights=path)
    assert det.transform.image_mean == pytest.approx([0.1, 0.2, 0.3])  # the file's normalization
    assert torch.equal(det.backbone.body[0].conv1.weight, net.conv1.weight)
    bn = det.backbone.body[0].bn1
    assert isinstance(bn, FrozenBatchNorm2d) and torch.equal(bn.running_var, net.bn1.running_var)
    with pytest.raises(WeightsError, match="holds resnet18"):
        create_detector("fasterrcnn_resnet50_c4", 3, backbone_weights=path)
    with pytest.raises(WeightsError, match="variant"):
        create_detector("fasterrcnn_resnet18_c4", 3, backbone_weights=path, backbone_kwargs={"variant": "v1.5"})
    with pytest.raises(ConfigError, match="image_mean"):
        create_detector("fasterrcnn_resnet18_c4", 3, backbone_weights=path, image_mean=[0.5] * 3)


# ----------------------------------------------------------------------------- data


def test_coco_reader_and_bad_files(tiny_coco, tmp_path):
    data = read_coco(tiny_coco, "train")
    # classes in the order of their ids, each with the data set's own id
    assert len(data) == 12 and data.classes == sorted(COCO_IDS, key=COCO_IDS.get)
    assert data.category_ids == sorted(COCO_IDS.values())
    image, target = data[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert target["boxes"].shape[1] == 4 and (target["labels"] >= 1).all()
    # a corrupt image: one clear error, or skipped and counted
    root = tmp_path / "bad"
    write_coco(root, "val", [shapes_image(0, i, side=64) for i in range(3)], SHAPES_CLASSES)
    (root / "val" / "000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="000001.jpg"):
        read_coco(root, "val")[1]
    lenient = read_coco(root, "val", skip_bad_images=True)
    assert lenient[1] is None and lenient.skipped == 1
    # a corrupt annotation
    (root / "annotations" / "instances_val.json").write_text('{"images": [')
    with pytest.raises(DataError, match="not a COCO instances file"):
        read_coco(root, "val")
    with pytest.raises(DataError, match="instances_test"):
        read_coco(root, "test")
    # a split without its year takes the one year present, and says which; both present: name the year
    years = tmp_path / "years"
    for year in ("2014", "2017"):
        write_coco(years, f"val{year}", [shapes_image(0, i, side=64) for i in range(2)], SHAPES_CLASSES)
    assert read_coco(years, "val2014").split == "val2014"
    with pytest.raises(DataError, match="name the split you mean: val2017 or val2014"):
        read_coco(years, "val")
    (years / "annotations" / "instances_val2017.json").unlink()
    assert read_coco(years, "val").split == "val2014" and len(read_coco(years, "val")) == 2
    with pytest.raises(DataError, match="unknown detection data"):
        open_detection_data("cifar10=x", "val")


VOC_XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>50</ymax></bndbox></object>
<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>
</annotation>"""


def test_voc_reader(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    shapes_image(0, 0, side=64)[0].save(root / "JPEGImages" / "000005.jpg")
    (root / "Annotations" / "000005.xml").write_text(VOC_XML.format(w=64, h=64))
    (root / "Annotations" / "000007.xml").write_text("<annotation><size>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000005\n")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n")
    data = read_voc(tmp_path, "test")
    rec = data.records[0]
    assert data.classes[7] == "cat" and rec.labels.tolist() == [12, 8]
    assert rec.boxes[0].tolist() == [10, 20, 40, 50]  # 1-based inclusive -> continuous
    assert rec.difficult.tolist() == [0, 1]
    with pytest.raises(DataError, match="000007.xml"):
        read_voc(tmp_path, "trainval")
    assert read_voc(tmp_path, "trainval", skip_bad_images=True).skipped == 1
    # the dog found exactly, a false "cat" on the difficult cat (ignored): VOC07 mAP over the classes with objects
    found = {"boxes": torch.tensor([[10.0, 20, 40, 50], [0, 0, 10, 10]]), "scores": torch.tensor([0.9, 0.8]),
             "labels": torch.tensor([12, 8])}
    result = voc07_map(data, [found])
    assert list(result["voc07_ap"]) == ["dog"] and result["voc07_map"] == pytest.approx(1.0)
    assert coco_map(data, [found])["map50"] == pytest.approx(1.0)  # difficult objects are crowd regions for pycocotools
    both = open_detection_data(f"voc={tmp_path}", "2007_test+2007_test")  # "07+12"-style unions
    assert [r.image_id for r in both.records] == [0, 1] and both.records[1].path == rec.path


def test_shapes_are_deterministic_and_not_solvable_by_colour(tmp_path, monkeypatch):
    a, objs_a = shapes_image(7, 3)
    b, objs_b = shapes_image(7, 3)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and objs_a == objs_b
    assert not np.array_equal(np.asarray(a), np.asarray(shapes_image(8, 3)[0]))
    # the fill colour is drawn independently of the class: a colour classifier is at chance
    colours, labels = [], []
    for i in range(160):
        image, objects = shapes_image(1, i)
        pixels = np.asarray(image, dtype=np.float64)
        for x1, y1, x2, y2, label, *_ in objects:
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            colours.append(pixels[cy, cx])
            labels.append(label)
    colours, labels = np.array(colours), np.array(labels)
    from sklearn.neighbors import KNeighborsClassifier

    half = len(labels) // 2
    knn = KNeighborsClassifier(15).fit(colours[:half], labels[:half])
    accuracy = (knn.predict(colours[half:]) == labels[half:]).mean()
    assert len(set(labels.tolist())) == 4 and accuracy < 0.4  # chance is 0.25
    # the generated set: real JPEG files and a COCO JSON, the same from the same seed
    monkeypatch.setattr("resnetlab.detection.data.SHAPES_SPLITS", {"train": 3, "val": 2})
    root = make_shapes(5, tmp_path / "s1")
    again = make_shapes(5, tmp_path / "s2")
    assert (root / "train" / "000000.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert (root / "annotations/instances_val.json").read_text() == (again / "annotations/instances_val.json").read_text()
    assert len(read_coco(root, "train")) == 3


# ----------------------------------------------------------------------------- metrics


def _voc(gt, difficult, dets, scores):
    return voc07_ap([np.array(g, float).reshape(-1, 4) for g in gt], [np.array(d, bool) for d in difficult],
                    [np.array(d, float).reshape(-1, 4) for d in dets], [np.array(s, float) for s in scores])


def test_voc07_ap_by_hand():
    box = [0, 0, 10, 10]
    # one object, one perfect detection: precision 1 at every recall -> AP 1
    assert _voc([[box]], [[0]], [[box]], [[0.9]]) == pytest.approx(1.0)
    # two objects; detections: hit (0.9), miss (0.8), hit (0.7). Recall 0.5 at precision 1, recall 1 at
    # precision 2/3: points 0..0.5 (6 of them) have 1, points 0.6..1 (5) have 2/3 -> (6 + 5 * 2/3) / 11
    gt = [[box, [20, 20, 30, 30]]]
    dets = [[box, [50, 50, 60, 60], [20, 20, 30, 30]]]
    assert _voc(gt, [[0, 0]], dets, [[0.9, 0.8, 0.7]]) == pytest.approx((6 + 5 * 2 / 3) / 11)
    # a duplicate detection of a matched object is a false positive: (6 + 5 * 2/3) / 11 again
    dets = [[box, [0, 0, 10, 10.5], [20, 20, 30, 30]]]
    assert _voc(gt, [[0, 0]], dets, [[0.9, 0.8, 0.7]]) == pytest.approx((6 + 5 * 2 / 3) / 11)
    # a detection on a difficult object counts as nothing, and difficult objects are not positives
    assert _voc(gt, [[0, 1]], dets[:1] and [[box, [20, 20, 30, 30]]], [[0.5, 0.9]]) == pytest.approx(1.0)
    # IoU must exceed 0.5: a box covering half the object (IoU 0.5) is a miss -> AP 0
    assert _voc([[box]], [[0]], [[[0, 0, 10, 5]]], [[0.9]]) == 0.0
    # half of two objects found, at the top: recall 0.5 -> 6 of 11 points
    assert _voc(gt, [[0, 0]], [[box]], [[0.9]]) == pytest.approx(6 / 11)
    assert np.isnan(_voc([[]], [[]], [[box]], [[0.9]]))


def _noisy_detections(data, seed=0):
    """Per image: each object found with a jittered box, one found under a wrong class, three false boxes."""
    rng = random.Random(seed)
    detections = []
    for rec in data.records:
        boxes = [[v + rng.uniform(-4, 4) for v in b] for b in rec.boxes.tolist()]
        boxes += [[rng.uniform(0, 30), rng.uniform(0, 30), rng.uniform(34, 64), rng.uniform(34, 64)] for _ in range(3)]
        labels = rec.labels.tolist() + [rng.randint(1, 4) for _ in range(3)]
        labels[0] = labels[0] % 4 + 1 if len(labels) > 4 else labels[0]
        detections.append({"boxes": torch.tensor(boxes), "scores": torch.tensor([rng.random() for _ in boxes]),
                           "labels": torch.tensor(labels)})
    return detections


def test_coco_map_equals_pycocotools_on_the_official_file(tiny_coco, tmp_path):
    """Detections exported with the data set's own category ids (1..90 with gaps on COCO) and scored by
    pycocotools against the instances file itself give resnetlab's numbers; so does ``score_files``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = read_coco(tiny_coco, "val")
    detections = _noisy_detections(data)
    ours = coco_map(data, detections)
    exported = coco_results(data, detections)
    assert {r["category_id"] for r in exported} <= set(COCO_IDS.values())
    results = tmp_path / "results.json"
    results.write_text(json.dumps(exported))
    instances = tiny_coco / "annotations" / "instances_val.json"
    gt = COCO(str(instances))
    ev = COCOeval(gt, gt.loadRes(str(results)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours == {"map": ev.stats[0], "map50": ev.stats[1], "map75": ev.stats[2]}
    assert 0 < ours["map"] < ours["map50"] <= 1
    scored = score_files(instances, results)  # what `resnetlab detect score` prints, with no model
    assert {k: scored[k] for k in ours} == ours and scored["n_detections"] == len(exported)
    assert scored["voc07_map"] == voc07_map(data, detections)["voc07_map"] > 0


# ----------------------------------------------------------------------------- recipes, training, CLI


#: The papers' settings, typed here from the papers and the authors' code, not from the recipes: He et al.
#: 2015 appendix A; Ren et al. 2015 (Faster R-CNN) sections 3.1.1, 3.3, 4.1 (VOC) and 4.2 (COCO: 8 GPUs, the
#: RPN step 8 images per mini-batch, anchors 64^2..512^2, 240k + 80k iterations); py-faster-rcnn's config.py
#: (12,000 / 6,000 proposals before NMS, 2,000 / 300 after, test NMS 0.3, use_diff False) and its Caffe
#: nets (biases: lr_mult 2, decay_mult 0).
PAPER_DETECTION = {
    "paper_voc": dict(lr_from=[(0, 0.001), (60_000, 0.0001)], iterations=60_000 + 20_000, images=1,
                      anchors=[128, 256, 512], splits=("2007_trainval+2012_trainval", "2007_test")),
    "paper_coco": dict(lr_from=[(0, 0.001), (240_000, 0.0001)], iterations=240_000 + 80_000, images=8,
                       anchors=[64, 128, 256, 512], splits=("train2014", "val2014")),
}
PAPER_DETECTION_BOTH = dict(momentum=0.9, weight_decay=0.0005, shorter=600, longer=1000, ratios=[0.5, 1.0, 2.0],
                            pre_nms={"training": 12_000, "testing": 6_000}, post_nms={"training": 2_000, "testing": 300},
                            test_nms=0.3, rois_per_image=128, bias_lr=2.0, bias_decay=0.0)


@pytest.mark.parametrize("recipe", ["paper_voc", "paper_coco"])
def test_paper_recipes_are_the_papers(recipe):
    """What a paper recipe builds and trains with, against the papers' numbers written above."""
    paper = {**PAPER_DETECTION_BOTH, **PAPER_DETECTION[recipe]}
    cfg = get_detect_recipe(recipe)
    schedule = engine.lr_schedule(cfg)
    for (start, lr), (end, _) in zip(paper["lr_from"], [*paper["lr_from"][1:], (paper["iterations"], None)]):
        assert schedule.lr(start) == pytest.approx(lr) and schedule.lr(end - 1) == pytest.approx(lr)
    assert cfg.iterations == paper["iterations"] and cfg.batch_size == paper["images"]
    assert (cfg.momentum, cfg.weight_decay, cfg.flip, cfg.train_difficult) == (paper["momentum"], paper["weight_decay"],
                                                                               True, False)
    assert (cfg.train_split, cfg.val_split) == paper["splits"]
    with torch.device("meta"):  # the detector the recipe builds (shapes only)
        det = create_detector(cfg.model, 20, **cfg.detector_kwargs())
    assert list(det.rpn.anchor_generator.sizes[0]) == paper["anchors"]
    assert list(det.rpn.anchor_generator.aspect_ratios[0]) == paper["ratios"]
    assert (det.transform.min_size, det.transform.max_size) == ((paper["shorter"],), paper["longer"])
    assert (det.rpn._pre_nms_top_n, det.rpn._post_nms_top_n) == (paper["pre_nms"], paper["post_nms"])
    assert det.roi_heads.nms_thresh == paper["test_nms"]
    assert det.roi_heads.fg_bg_sampler.batch_size_per_image == paper["rois_per_image"]
    weights, biases = engine._param_groups(det, cfg)
    assert (weights["lr_mult"], weights["weight_decay"]) == (1.0, paper["weight_decay"])
    assert (biases["lr_mult"], biases["weight_decay"]) == (paper["bias_lr"], paper["bias_decay"])
    assert all(p.ndim == 1 for p in biases["params"]) and biases["params"]
    # every departure from the papers is in the recipe's description
    assert DEPARTURES[recipe] and all(d in DETECT_RECIPES[recipe][1] for d in DEPARTURES[recipe])


def test_recipe_overrides():
    assert get_detect_recipe("shapes_demo", ["lr=0.5", "seed=3", "min_size=100"]).lr == 0.5
    with pytest.raises(ConfigError, match="unknown key"):
        get_detect_recipe("shapes_demo", ["learning_rate=0.1"])
    with pytest.raises(ConfigError, match="min_size"):
        get_detect_recipe("shapes_demo", ["min_size=2000"])
    with pytest.raises(ConfigError, match="not divisible by accumulate"):
        get_detect_recipe("shapes_demo", ["accumulate=3"])


def test_options_a_detector_would_drop_are_refused(tiny_coco, tmp_path):
    # the FPN detector pools with torchvision's 7x7 multi-scale RoIAlign: roi_pool and roi_output_size are C4's
    for pair in ("roi_pool=roialign", "roi_output_size=7"):
        cfg = get_detect_recipe("shapes_demo", ["model=fasterrcnn_resnet50_fpn", pair])
        with pytest.raises(ConfigError, match="C4 options"):
            create_detector(cfg.model, 3, **cfg.detector_kwargs())
    # frozen BN on a random backbone is the identity: refused before any work, naming the two ways out
    short = TINY + ["train_split=train", "val_split=val", "iterations=2", "checkpoint_every=2"]
    with pytest.raises(ConfigError, match="backbone_weights=FILE .* frozen_bn=false trainable_stages=5"):
        train_detector("paper_voc", short, data=f"coco={tiny_coco}", out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_accumulated_micro_batches_give_one_batch_gradient():
    """``accumulate`` micro-batches add up to the gradient of one mini-batch of their images, for losses
    that are means over the images (as torchvision's are, over the sampled anchors and RoIs)."""
    class MeanLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0]))

        def forward(self, images, targets):
            x = torch.stack(images)
            return {"loss_a": (x @ self.w).square().mean(), "loss_b": (x.sum(1) * self.w[0]).mean()}

    images = [torch.tensor([1.0, 2.0]), torch.tensor([-3.0, 0.5]), torch.tensor([0.3, 0.3]), torch.tensor([2.0, -1.0])]
    whole, parts = MeanLoss(), MeanLoss()
    one = engine.accumulated_step(whole, [(images, [None] * 4)], 1, "")
    two = engine.accumulated_step(parts, [(images[:2], [None] * 2), (images[2:], [None] * 2), ([], [])], 2, "")
    torch.testing.assert_close(parts.w.grad, whole.w.grad)
    assert two["n"] == one["n"] == 4 and two["loss"] == pytest.approx(one["loss"])
    with pytest.raises(TrainingError, match="loss became nan at step 7"):
        engine.accumulated_step(MeanLoss(), [([torch.tensor([float("nan"), 0.0])], [None])], 1, "at step 7")


def test_detector_file_rebuilds_its_backbone(tiny_coco, tmp_path, capsys):
    """A detector trained on backbone weights of a non-default architecture (v1.5 strides, Caffe's pool1)
    reloads as that network: the same features and detections, not a same-keys default net."""
    torch.manual_seed(0)
    net = resnetlab.create_model("resnet50", num_classes=10, widths=[4, 8, 16, 32], stem_pool="caffe", variant="v1.5")
    with torch.no_grad():  # BN statistics of real activations: frozen BN then normalizes
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.momentum = None
        net.train()(torch.rand(16, 3, 64, 64))
    backbone = tmp_path / "r50.safetensors"
    resnetlab.save_weights(net, backbone, mean=[0.4, 0.4, 0.4], std=[0.25, 0.25, 0.25])
    args = ["model=fasterrcnn_resnet50_c4", f"backbone_weights={backbone}", "frozen_bn=true", "trainable_stages=3",
            "min_size=64", "max_size=64", "anchor_sizes=[16,32,64]", "roi_output_size=8", "batch_size=1",
            "iterations=2", "milestones=[]", "warmup_iterations=0", "lr=0.001", "log_every=1", "checkpoint_every=2",
            f"threads={torch.get_num_threads()}"]
    run = train_detector("shapes_demo", args, data=f"coco={tiny_coco}", out_dir=tmp_path / "run", progress=False)
    threads = torch.get_num_threads()  # chosen as every command chooses, and said
    assert f"on cpu, {threads} CPU thread{'s' if threads > 1 else ''} (threads={threads})" in capsys.readouterr().err
    loaded, meta = resnetlab.detection.load_detector(run.weights)
    assert meta.kwargs["backbone_kwargs"]["variant"] == "v1.5" and meta.kwargs["backbone_kwargs"]["stem_pool"] == "caffe"
    # the network as trained: built on the backbone file again, with the trained tensors
    cfg = get_detect_recipe("shapes_demo", args)
    trained = create_detector(cfg.model, 4, backbone, **cfg.detector_kwargs())
    trained.load_state_dict(load_file(str(run.weights)))
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.backbone(image[None])["0"], trained.eval().backbone(image[None])["0"])
        got, want = loaded([image])[0], trained([image])[0]
    assert all(torch.equal(got[k], want[k]) for k in want)
    # a file that does not record its backbone's architecture is refused, not rebuilt with defaults
    old = tmp_path / "old.safetensors"
    header = {**meta.to_metadata(), "resnetlab.kwargs": json.dumps({k: v for k, v in meta.kwargs.items()
                                                                    if k != "backbone_kwargs"})}
    save_file(load_file(str(run.weights)), str(old), metadata=header)
    with pytest.raises(WeightsError, match="does not record its backbone's architecture"):
        resnetlab.detection.load_detector(old)


def test_training_resumes_exactly(tiny_coco, tmp_path, monkeypatch):
    args = TINY + ["batch_size=2", "log_every=2", "checkpoint_every=3", "lr=0.01", "warmup_iterations=0",
                   "iterations=4"]
    data = f"coco={tiny_coco}"
    whole = train_detector("shapes_demo", args, data=data, out_dir=tmp_path / "a", progress=False)
    real = Schedule.lr

    def sigterm_during_step_2(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop: step 2 ends, a checkpoint, return
        return real(self, step)

    monkeypatch.setattr(Schedule, "lr", sigterm_during_step_2)
    stopped = train_detector("shapes_demo", args, data=data, out_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(Schedule, "lr", real)
    assert stopped.interrupted and stopped.step == 3 and stopped.weights is None
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not (tmp_path / "b" / "final.safetensors").exists()
    # --out and --resume alone: the settings and the data come from config.json; threads changes the
    # speed and the float rounding order, not the recipe, so a resume may set it (to the same count
    # here, so that the weights stay bit-identical)
    train_detector("shapes_demo", [f"threads={torch.get_num_threads()}"], out_dir=tmp_path / "b", resume=True,
                   progress=False)
    a = resnetlab.detection.load_detector(whole.weights)[0].state_dict()
    b = resnetlab.detection.load_detector(tmp_path / "b" / "final.safetensors")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def lines(run):  # metrics.jsonl without the timing fields
        return [{k: v for k, v in json.loads(x).items() if k not in ("time", "img_s")}
                for x in (run / "metrics.jsonl").read_text().splitlines()]

    # the same lines, the step-4 loss averaged over steps 3-4 although the stop fell between them
    assert lines(tmp_path / "b") == lines(tmp_path / "a")
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir() if p.is_file()}
    again = train_detector("shapes_demo", out_dir=tmp_path / "b", resume=True, progress=False)  # finished: no-op
    assert again.step == 4 and again.metrics == {k[4:]: v for k, v in lines(tmp_path / "b")[-1].items() if k != "step"}
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir() if p.is_file()} == before
    assert [r["step"] for r in lines(tmp_path / "b") if "train_loss" in r] == [2, 4]
    with pytest.raises(ConfigError, match="iterations: 4 -> 5"):  # a result-changing override is refused
        train_detector("shapes_demo", ["iterations=5"], out_dir=tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ConfigError, match="a run of recipe 'shapes_demo'.*resnetlab detect train shapes_demo"):
        train_detector("paper_voc", out_dir=tmp_path / "b", resume=True, progress=False)


@pytest.fixture(scope="module")
def trained(tiny_coco, tmp_path_factory):
    """`resnetlab detect train` of the tiny detector for 20 steps: its run folder."""
    run = tmp_path_factory.mktemp("detect") / "run"
    args = TINY + ["batch_size=2", "iterations=20", "log_every=2", "lr=0.02", "warmup_iterations=2",
                   "milestones=[16]", "checkpoint_every=20"]
    assert main(["detect", "train", "shapes_demo", *args, "--data", f"coco={tiny_coco}", "--out", str(run)]) == 0
    return run


def test_train_eval_predict_export_cli(trained, tiny_coco, tmp_path, capsys):
    run = trained
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "final.safetensors", "curves.png"):
        assert (run / name).is_file(), name
    losses = [json.loads(x)["train_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in x]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])  # the loss falls
    capsys.readouterr()
    weights = str(run / "final.safetensors")
    assert main(["detect", "eval", weights, "--data", f"coco={tiny_coco}", "--split", "val", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"model", "dataset", "split", "n_images", "map", "map50", "map75"} <= set(result)
    assert result["n_images"] == 4 and 0 <= result["map"] <= result["map50"] <= 1
    image = tiny_coco / "val" / "000000.jpg"
    drawn = tmp_path / "drawn"
    assert main(["detect", "predict", weights, str(image), "--json", "--score-threshold", "0", "--out", str(drawn)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    pred = json.loads(line)
    assert pred["image"] == str(image) and len(pred["boxes"]) == len(pred["labels"]) == len(pred["scores"])
    assert all(0 <= v <= 64 for b in pred["boxes"] for v in b) and pred["labels"]
    # the data set's own category ids, each with its class name
    assert all(COCO_IDS[name] == label for name, label in zip(pred["names"], pred["labels"], strict=True))
    assert (drawn / "000000.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "det.pt"
    assert main(["detect", "export", weights, "--format", "torchscript", "-o", str(out)]) == 0
    assert "as torchscript" in capsys.readouterr().out
    scripted = torch.jit.load(str(out))
    assert scripted([torch.rand(3, 64, 80)])[1][0]["boxes"].shape[1] == 4
    # the exported detectors find what PyTorch finds: on a detector made to find objects everywhere (class
    # scores raised on every RoI, so that the check image has boxes to compare), box for box
    detector, meta = resnetlab.detection.load_detector(weights)
    with torch.no_grad():
        detector.roi_heads.box_predictor.cls_score.bias[1] += 6.0
    eager = tmp_path / "eager.safetensors"
    resnetlab.detection.models.save_detector(detector, eager, meta)
    for fmt in ("torchscript", "onnx"):  # onnx: torchvision's ONNX path through onnxruntime
        result = engine.export_detector(eager, fmt, tmp_path / f"det.{fmt}")
        assert result["n_boxes"] >= 5 and result["max_abs_diff"] < 1e-2, result
    # mistakes: one line on stderr, exit code 2
    assert main(["detect", "eval", str(image), "--data", f"coco={tiny_coco}"]) == 2
    capsys.readouterr()
    for classifier_command in (["eval", weights, "--data", "digits"], ["predict", weights, str(image)],
                               ["export", weights, "--format", "onnx", "-o", str(tmp_path / "c.onnx")]):
        assert main(classifier_command) == 2  # a detector file given to the classifier's commands
        assert "a detector weights file (fasterrcnn_" in capsys.readouterr().err
    assert main(["detect", "train", "shapes_demo", "bogus=1", "--data", "shapes", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_tables_7_and_8_put_ours_beside_the_paper(trained, tiny_coco, tmp_path):
    root = tmp_path / "reproduce"
    runs = root / "runs" / "table8-fasterrcnn_resnet18_c4"
    runs.mkdir(parents=True)
    shutil.copy(trained / "final.safetensors", runs / "final.safetensors")  # a finished run is reused
    settings = DetectionTableSettings("paper_coco", model="fasterrcnn_resnet18_c4", iterations=20,
                                      train_split="train", val_split="val")
    ctx = SimpleNamespace(experiment="table8", settings=settings, train_overrides={}, data=f"coco={tiny_coco}",
                          folder=root / "table8", note=None, write_table=lambda text: tables.append(text))
    tables: list[str] = []
    result = run_table8(ctx)
    text = tables[0]
    assert "48.4" in text and "27.2" in text and "41.5" in text  # the paper's rows
    assert "shortened" in text and "iterations=20 (paper: 320000)" in text and "random init" in text
    assert "val_split=val (paper: val2014)" in text
    assert f"{100 * result['result']['map50']:.1f}" in text and "reproduce table8 backbone_weights=" in text
    assert DetectionTableSettings("paper_voc").overrides()["model"] == "fasterrcnn_resnet101_c4"
    assert DetectionTableSettings("paper_voc", iterations=800).overrides()["milestones"] == [600]
    assert DetectionTableSettings("paper_voc", backbone_weights="w.safetensors").shortening() is None
    # without ImageNet weights BN cannot stay frozen (it would be the identity): trained, and said so
    assert DetectionTableSettings("paper_voc").overrides()["frozen_bn"] is False
    assert "BN and every stage trained" in DetectionTableSettings("paper_voc").shortening()


def test_complexity_of_the_papers_backbone():
    c = backbone_complexity("fasterrcnn_resnet101_c4")
    # conv1..conv4_x of ResNet-101 (the counts of resnetlab.complexity on the trunk alone)
    with torch.device("meta"):  # shapes only
        trunk = resnetlab.create_model("resnet101")
        full = resnetlab.complexity(trunk)["macs"]
    body = sum(p.numel() for n, p in trunk.named_parameters() if not n.startswith(("layer4", "fc")))
    assert c["trunk_params"] == body
    head = sum(p.numel() for p in trunk.layer4.parameters())
    assert c["head_params"] == head
    # conv5_x on one 14x14 RoI is conv5_x of the 224x224 classifier (7x7 output)
    assert c["head_macs_per_roi"] < full and c["trunk_macs"] > 10 * full


def test_tables_are_reproduce_experiments():
    assert EXPERIMENTS["table7"].runner is run_table7 and EXPERIMENTS["table8"].runner is run_table8
    assert EXPERIMENTS["table7"].settings.detect_recipe == "paper_voc"
    assert dataset_name("voc=/data/VOCdevkit") == "voc" and dataset_name("shapes") == "shapes"
    assert dataset_name("cifar10=/x") == "cifar10"


def test_report_states_every_departure():
    """results/REPORT.md (generated by `resnetlab report` from report.py) lists each paper recipe's departures."""
    report = (Path(__file__).resolve().parents[1] / "results" / "REPORT.md").read_text()
    for recipe, departures in DEPARTURES.items():
        assert all(f"- {d}" in report for d in departures), recipe


def test_eval_saves_detections_that_score_alike_without_a_model(trained, tiny_coco, tmp_path, capsys):
    """`detect eval --save-dets` writes COCO results with the data set's ids; `detect score` gives the same
    numbers from that file and the official instances file through pycocotools, with no model."""
    weights, instances = str(trained / "final.safetensors"), tiny_coco / "annotations" / "instances_val.json"
    capsys.readouterr()
    dets = tmp_path / "dets.json"
    assert main(["detect", "eval", weights, "--data", f"coco={tiny_coco}", "--save-dets", str(dets), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (evaluated["dets"], evaluated["gt"]) == (str(dets), str(instances))
    saved = json.loads(dets.read_text())
    assert saved and {r["category_id"] for r in saved} <= set(COCO_IDS.values())
    assert main(["detect", "score", "--gt", str(instances), "--dets", str(dets), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: scored[k] for k in ("map", "map50", "map75")} == {k: evaluated[k] for k in ("map", "map50", "map75")}
    assert (scored["n_images"], scored["n_detections"]) == (4, len(saved)) and "voc07_map" in scored
    # part of the split evaluated: the ground truth of those images is written beside the detections
    part = tmp_path / "part.json"
    assert main(["detect", "eval", weights, "--data", f"coco={tiny_coco}", "--limit", "2", "--save-dets", str(part),
                 "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["gt"] == str(tmp_path / "part.gt.json")
    assert score_files(evaluated["gt"], part)["map50"] == evaluated["map50"]
    # detections that name an image or a category the ground truth does not have: one line, exit code 2
    for wrong in ({"image_id": 999}, {"category_id": 1}, {"bbox": [0, 0, 1]}):
        (tmp_path / "bad.json").write_text(json.dumps([{**saved[0], **wrong}]))
        assert main(["detect", "score", "--gt", str(instances), "--dets", str(tmp_path / "bad.json")]) == 2
        assert "bad.json: detection 0" in capsys.readouterr().err
    assert main(["detect", "score", "--gt", str(tmp_path / "none.json"), "--dets", str(dets)]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
