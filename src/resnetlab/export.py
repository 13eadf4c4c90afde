"""Export a weights file for deployment: ONNX (dynamic batch axis), TorchScript, or a model-hub folder.

All carry the weights file's metadata (normalization, input size, class names): ONNX as
``metadata_props``, TorchScript as the extra file ``resnetlab.json``, a hub folder
(:mod:`resnetlab.hub`) in ``model.safetensors``, ``config.json`` and its model card.  ONNX needs the
``onnx`` extra (``pip install 'resnetlab[onnx]'``); with onnxruntime installed the exported
graph is run once and compared with PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import runfolder
from .errors import ConfigError
from .files import atomic_save
from .hub import META_KEYS, from_pretrained, save_pretrained
from .weights import WeightsMeta, load_weights

__all__ = ["FORMATS", "export", "onnx_max_abs_diff", "to_onnx"]

FORMATS = ("onnx", "torchscript", "hub")
#: opset of the exported ONNX graph (supported by onnxruntime >= 1.18)
ONNX_OPSET = 18


def _example(meta: WeightsMeta, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *meta.input_size)


def to_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike,
            metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` (eval, fp32, NCHW) as ONNX to ``path`` (atomically), traced on ``example``.

    Input ``input``, output ``logits``, a dynamic batch axis, opset :data:`ONNX_OPSET`, the
    TorchScript-based exporter (for these nets about 7x quicker than the dynamo one, same
    graph); ``metadata`` goes into the graph's ``metadata_props`` (needs the ``onnx`` package).
    """
    if metadata:
        try:
            import onnx  # optional: the onnx extra
        except ImportError:
            raise ConfigError("ONNX export needs the onnx extra: pip install 'resnetlab[onnx]'") from None

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's note on its own future
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        if metadata:
            graph = onnx.load(tmp)
            for key, value in metadata.items():
                graph.metadata_props.add(key=key, value=value)
            onnx.save(graph, tmp)

    atomic_save(path, write)


def _export_torchscript(model: nn.Module, meta: WeightsMeta, out: Path) -> None:
    # No trace check here: export() compares the saved module with PyTorch afterwards.
    scripted = torch.jit.trace(model, _example(meta), check_trace=False)
    extra = {"resnetlab.json": json.dumps(meta.to_metadata())}
    atomic_save(out, lambda tmp: torch.jit.save(scripted, tmp, _extra_files=extra))


def onnx_max_abs_diff(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> float | None:
    """Largest |onnxruntime - PyTorch| logit difference on ``x``; ``None`` without onnxruntime."""
    try:
        import onnxruntime as ort  # optional: the onnx extra (without it the export is not checked)
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        want = model(x)
    return float((torch.from_numpy(got) - want).abs().max())


def _hub_meta(meta: WeightsMeta, weights: Path) -> dict[str, Any]:
    """What a hub folder records of ``weights``: its metadata and, for the final weights of a
    training run, the run's last validation (the model card's evaluation)."""
    fields = {k: v for k, v in dataclasses.asdict(meta).items() if k in META_KEYS}
    validation = runfolder.last_validation(weights.parent) if weights.name == runfolder.FINAL else None
    return dict(fields, evaluation=[validation] if validation is not None else [])


def export(weights: str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict[str, Any]:
    """Export the weights file ``weights`` as ``fmt`` (``onnx``, ``torchscript`` or ``hub``: a folder) to ``out``.
    A hub folder made from a run folder's ``final.safetensors`` records the run's last validation.

    Returns ``{"model", "format", "out", "max_abs_diff"}``: the output difference against
    PyTorch on a batch of 3 random inputs (a batch size other than the traced one, which
    checks the dynamic axis), or ``None`` where it cannot be measured (ONNX without onnxruntime).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    model, meta = load_weights(weights)
    out = Path(out)
    x = _example(meta, batch=3)
    with warnings.catch_warnings():
        # The exporters' notes on their own internals (constant folding, TorchScript's
        # deprecation in favour of torch.export) are not the user's business.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "onnx":
            to_onnx(model, _example(meta), out, meta.to_metadata())
            diff = onnx_max_abs_diff(out, model, x)
        elif fmt == "hub":
            save_pretrained(model, out, _hub_meta(meta, Path(weights)))
            rebuilt = from_pretrained(out)
            with torch.inference_mode():
                diff = float((rebuilt(x) - model(x)).abs().max())
        else:
            _export_torchscript(model, meta, out)
            with torch.inference_mode():
                diff = float((torch.jit.load(str(out))(x) - model(x)).abs().max())
    return {"model": meta.model, "format": fmt, "out": str(out), "max_abs_diff": diff}
