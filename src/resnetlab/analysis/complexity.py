"""Parameter and multiply-add counts (paper Table 1 "FLOPs" are multiply-adds).

Counted as the paper counts: the multiply-adds of every convolution and fully-connected
layer for one image. BN, ReLU, pooling and the shortcut additions are not counted.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from ..config import parse_overrides
from ..errors import ConfigError
from ..registry import create_model, model_info

__all__ = ["complexity", "check_input_size"]


def check_input_size(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """Run ``model`` once on a zero ``input_size`` image (C, H, W) in eval mode, without gradients
    (its mode is restored, its BN statistics untouched); a size it cannot take is a
    :class:`ConfigError` with torch's reason (AlexNet's fc6 takes only its 224x224 input, and a
    32x32 image is too small for its pooling)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=param.device if param is not None else "cpu"))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        name = getattr(model, "resnetlab_name", type(model).__name__)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{name} cannot take {input_size[-1]}x{input_size[-2]} inputs ({reason})") from None
    finally:
        model.train(was_training)


def complexity(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` of ``model`` for one ``input_size`` image (C, H, W).

    ``macs`` counts conv and linear multiply-adds, measured by running the model once on a
    zero image with forward hooks (:func:`check_input_size`), so it is exact for any architecture
    and input size; a size the model cannot take is a :class:`ConfigError`.
    """
    macs = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]  # (C_in/groups) kh kw
        macs += output.numel() // output.shape[0] * k

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() // output.shape[0] * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        check_input_size(model, input_size)
    finally:
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": int(macs)}


def _layer_lines(model: nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    """One line per top-level stage of ``model``: name, what it holds, output shape.

    Named ``nn.Sequential`` containers (``features.denseblock1`` ...) are opened one level.
    """
    stage_alias: dict[str, str] = getattr(model, "paper_stage_names", {})
    rows: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        grandchildren = list(child.named_children())
        if isinstance(child, nn.Sequential) and grandchildren and not grandchildren[0][0].isdigit():
            rows.extend((f"{name}.{n}", c) for n, c in grandchildren)
        else:
            rows.append((name, child))
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, key=key: shapes.__setitem__(key, tuple(out.shape[1:])))
        for key, m in rows
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
    lines = []
    for key, module in rows:
        if key not in shapes:  # e.g. a module not used by forward()
            continue
        if isinstance(module, nn.Sequential) and len(module) > 0:
            kinds = Counter(type(m).__name__ for m in module)
            what = ", ".join(f"{n} x {k}" for k, n in kinds.items())
        else:
            what = type(module).__name__
        label = f"{key} ({stage_alias[key]})" if key in stage_alias else key
        n_params = sum(p.numel() for p in module.parameters())
        lines.append(f"{label:22s} {what:38s} -> {'x'.join(map(str, shapes[key])):14s} {n_params:>12,d} params")
    return lines


def describe(name: str, overrides: list[str] | dict | None = None, input_side: int | None = None) -> dict:
    """What ``resnetlab info`` prints: name, arguments, params, multiply-adds and the stage layout.

    ``overrides`` are model keyword arguments (``["variant=v1.5"]`` or a dict); ``input_side``
    replaces the side of the model's default square input.
    """
    kwargs = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    info = model_info(name)
    num_classes = kwargs.pop("num_classes", None)
    model = create_model(name, num_classes=num_classes, **kwargs)
    channels = info.input_size[0]
    size = info.input_size if input_side is None else (channels, input_side, input_side)
    if input_side is not None and input_side < 1:
        raise ConfigError(f"--input-size must be positive, got {input_side}")
    counts = complexity(model, size)
    return {
        "model": name,
        "family": info.family,
        "paper": info.paper,
        "kwargs": model.resnetlab_kwargs,
        "input_size": list(size),
        "params": counts["params"],
        "macs": counts["macs"],
        "gmacs": round(counts["macs"] / 1e9, 3),
        "layers": _layer_lines(model, size),
    }
