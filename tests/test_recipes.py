"""Recipes: the papers' numbers as data, overrides checked by type and range."""

from __future__ import annotations

import dataclasses

import pytest

from resnetlab.config import apply_overrides, parse_overrides
from resnetlab.errors import ConfigError
from resnetlab.recipes import RECIPES, RESULT_NEUTRAL_KEYS, TrainConfig, get_recipe, result_changes


def test_paper_cifar_is_section_4_2() -> None:
    r = get_recipe("paper_cifar")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (r.milestones, r.iterations, r.gamma) == ((32_000, 48_000), 64_000, 0.1)
    assert (r.val, r.augment, r.pad, r.normalization) == ("holdout", "cifar", 4, "per_pixel_mean")
    assert (r.label_smoothing, r.ema_decay, r.grad_clip, r.warmup_until_train_error) == (0.0, 0.0, 0.0, None)


def test_other_recipes() -> None:
    imagenet = get_recipe("paper_imagenet")
    assert (imagenet.batch_size, imagenet.schedule, imagenet.iterations, imagenet.augment) == (256, "plateau", 600_000,
                                                                                                 "imagenet")
    alexnet = get_recipe("alexnet_imagenet")
    assert (alexnet.lr, alexnet.weight_decay, alexnet.epochs) == (0.01, 5e-4, 90)
    densenet = get_recipe("densenet_cifar")
    assert densenet.nesterov and densenet.milestones == (150, 225) and densenet.epochs == 300
    assert get_recipe("demo").data == "digits"
    assert set(RECIPES) == {"paper_cifar", "paper_cifar_50k", "paper_imagenet", "alexnet_imagenet", "densenet_cifar",
                            "paper_cifar_preact", "wrn_cifar", "demo"}


def test_overrides_are_typed() -> None:
    r = apply_overrides(get_recipe("paper_cifar"), parse_overrides(
        ["model=cifar_resnet110", "warmup_until_train_error=0.8", "iterations=64e3", "milestones=[100,200]"]))
    assert r.model == "cifar_resnet110" and r.iterations == 64_000 and r.milestones == (100, 200)
    assert get_recipe("paper_cifar").model == "cifar_resnet20"  # recipes are frozen data


@pytest.mark.parametrize("pair, key", [
    ("lr=-0.1", "lr"), ("batch_size=0", "batch_size"), ("gamma=2", "gamma"), ("momentum=1", "momentum"),
    ("milestones=[48000,32000]", "milestones"), ("batch_size=100", "accumulate"), ("iterations=x", "iterations"),
    ("amp=fp8", "amp"), ("nosuchkey=1", "nosuchkey"), ("device=tpu", "device"), ("threads=-1", "threads"),
])
def test_bad_values_name_the_key(pair: str, key: str) -> None:
    overrides = parse_overrides([pair])
    if key == "accumulate":
        overrides["accumulate"] = 3
    with pytest.raises(ConfigError, match=key):
        apply_overrides(get_recipe("paper_cifar"), overrides)


def test_unknown_recipe() -> None:
    with pytest.raises(ConfigError, match="paper_cifar"):
        get_recipe("paper_cifar10")


def test_to_dict_is_json_ready() -> None:
    d = TrainConfig().to_dict()
    assert d["milestones"] == [32_000, 48_000] and set(d) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_threads_is_a_result_neutral_key() -> None:
    """``threads=N`` sets a run's CPU threads (0: the command's automatic choice); it changes how fast a
    run goes, not what it computes, so a resume may change it."""
    r = apply_overrides(get_recipe("demo"), parse_overrides(["threads=1"]))
    assert r.threads == 1 and get_recipe("demo").threads == 0
    assert "threads" in RESULT_NEUTRAL_KEYS and not result_changes(r.to_dict(), get_recipe("demo").to_dict())


@pytest.mark.parametrize("pairs, refusal", [
    (["schedule=cosine"], "milestones=\\[32000, 48000\\] with schedule=cosine"),
    (["schedule=constant"], "milestones=\\[32000, 48000\\] with schedule=constant"),
    (["schedule=cosine", "milestones=[]", "gamma=0.5"], "gamma=0.5 with schedule=cosine"),
    (["schedule=constant", "milestones=[]", "gamma=0.2"], "gamma=0.2 with schedule=constant"),
    (["warmup_lr=0.02"], "warmup_lr=0.02 without warmup_until_train_error"),
    (["mean=[0.5,0.5,0.5]"], "mean=\\[0.5, 0.5, 0.5\\] with normalization=per_pixel_mean"),
])
def test_settings_the_run_would_not_use_are_refused(pairs: list[str], refusal: str) -> None:
    """A value parsed and then ignored is refused with what would use it."""
    with pytest.raises(ConfigError, match=refusal):
        apply_overrides(get_recipe("paper_cifar"), parse_overrides(pairs))


def test_the_same_settings_where_they_are_used() -> None:
    ok = [["schedule=cosine", "milestones=[]"], ["schedule=constant", "milestones=[]"],
          ["warmup_until_train_error=0.8", "warmup_lr=0.02"], ["normalization=per_channel", "mean=[0.5,0.5,0.5]"],
          ["gamma=0.5"]]
    for pairs in ok:
        apply_overrides(get_recipe("paper_cifar"), parse_overrides(pairs))
    for recipe in RECIPES.values():  # every recipe uses what it sets
        apply_overrides(recipe, {})


def test_a_key_added_after_a_run_was_made_counts_as_its_default():
    """A run folder written before a config key existed did what the key's default does: resuming
    it is not refused for that key (it was, when warmup_lr_iterations was added), while a key that
    differs from the default still is."""
    now = get_recipe("paper_cifar").to_dict()
    before = {k: v for k, v in now.items() if k != "warmup_lr_iterations"}
    assert result_changes(now, before) == {}
    assert result_changes(dict(now, warmup_lr_iterations=400), before) == {"warmup_lr_iterations": (0, 400)}
