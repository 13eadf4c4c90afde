"""Weight files: safetensors with the metadata that rebuilds the model (the format ``resnetlab import``, ``train`` and ``export`` share).

A weights file holds the state dict as safetensors tensors and, as string metadata,
``resnetlab.model`` (registered name), ``resnetlab.kwargs`` (JSON), ``resnetlab.mean`` /
``resnetlab.std`` (JSON lists on the [0, 1] RGB scale, per channel or nested per pixel),
``resnetlab.input_size`` (JSON ``[C, H, W]``), ``resnetlab.classes`` (JSON list of names),
``resnetlab.source`` and ``resnetlab.format_version``.

Files come from strangers: the header is parsed and checked here (sizes, offsets, dtypes)
before safetensors touches the data, so a truncated or corrupt file is one clear
:class:`WeightsError`, and a state dict that does not fit the architecture is refused with
the names of the offending tensors, never loaded with ``strict=False``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ConfigError, ResnetlabError, WeightsError
from .files import atomic_save
from .models.features import FeatureNet
from .pickles import written_by_torch_save
from .registry import create_model, model_info

__all__ = [
    "FORMAT_VERSION",
    "DETECTOR_FORMAT",
    "WeightsMeta",
    "save_weights",
    "load_weights",
    "read_meta",
    "read_header",
    "read_json_object",
    "check_state_dict",
    "atomic_save",
]

FORMAT_VERSION = "1"
PREFIX = "resnetlab."
#: ``resnetlab.format`` of a detector weights file (``resnetlab.detection``): not a classifier
DETECTOR_FORMAT = "detector-1"
REQUIRED_KEYS = ("model", "kwargs", "mean", "std", "input_size", "classes", "source")

# safetensors dtype names -> bytes per element (the format's own table)
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
# The safetensors reference implementation refuses headers above 100 MB.
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class WeightsMeta:
    """The metadata of a weights file: enough to rebuild the model and feed it correctly."""

    model: str
    kwargs: dict[str, Any]
    mean: list
    std: list
    input_size: tuple[int, int, int]
    classes: list[str]
    source: str
    format_version: str = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        """The safetensors string metadata of this file (``resnetlab.*`` keys)."""
        return {
            PREFIX + "model": self.model,
            PREFIX + "kwargs": json.dumps(self.kwargs, sort_keys=True),
            PREFIX + "mean": json.dumps(self.mean),
            PREFIX + "std": json.dumps(self.std),
            PREFIX + "input_size": json.dumps(list(self.input_size)),
            PREFIX + "classes": json.dumps(self.classes),
            PREFIX + "source": self.source,
            PREFIX + "format_version": self.format_version,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], where: str = "weights file") -> "WeightsMeta":
        """Parse and check ``resnetlab.*`` metadata; :class:`WeightsError` names the bad key."""
        if metadata.get(PREFIX + "format") == DETECTOR_FORMAT:
            raise WeightsError(f"{where}: a detector weights file ({metadata.get(PREFIX + 'detector', '?')}), not a "
                               "classifier: use `resnetlab detect eval|predict|export`")
        missing = [PREFIX + k for k in REQUIRED_KEYS if PREFIX + k not in metadata]
        if missing:
            raise WeightsError(
                f"{where}: not a resnetlab weights file (metadata lacks {', '.join(missing)}); "
                "convert foreign checkpoints with `resnetlab import`"
            )

        def parse(key: str) -> Any:
            try:
                return json.loads(metadata[PREFIX + key])
            except (json.JSONDecodeError, TypeError):
                raise WeightsError(f"{where}: metadata {PREFIX + key} is not valid JSON") from None

        kwargs = parse("kwargs")
        if not isinstance(kwargs, dict):
            raise WeightsError(f"{where}: metadata {PREFIX}kwargs must be a JSON object")
        input_size = parse("input_size")
        if not (isinstance(input_size, list) and len(input_size) == 3 and all(_is_pos_int(v) for v in input_size)):
            raise WeightsError(f"{where}: metadata {PREFIX}input_size must be [C, H, W], got {input_size!r}")
        classes = parse("classes")
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise WeightsError(f"{where}: metadata {PREFIX}classes must be a non-empty JSON list of names")
        mean, std = parse("mean"), parse("std")
        try:
            _check_norm("mean", mean, input_size[0])
            _check_norm("std", std, input_size[0])
        except WeightsError as exc:
            raise WeightsError(f"{where}: metadata {PREFIX}{exc}") from None
        return cls(
            model=str(metadata[PREFIX + "model"]),
            kwargs=kwargs,
            mean=mean,
            std=std,
            input_size=tuple(input_size),
            classes=classes,
            source=str(metadata[PREFIX + "source"]),
            format_version=str(metadata.get(PREFIX + "format_version", FORMAT_VERSION)),
        )


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_norm(name: str, values: Any, channels: int) -> None:
    """``values`` must be numbers per channel (length C) or per pixel (C x H x W); std > 0."""
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise WeightsError(f"{name} must be a list of numbers (per channel) or nested C x H x W lists") from None
    if t.dim() not in (1, 3) or t.shape[0] != channels:
        raise WeightsError(f"{name} must have {channels} channels (per channel or C x H x W), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (name == "std" and (t <= 0).any()):
        raise WeightsError(f"{name} must be finite{' and positive' if name == 'std' else ''}")


def _num_outputs(model: nn.Module) -> int | None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    return getattr(head, "out_features", None) or getattr(head, "out_channels", None)


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    mean: Sequence,
    std: Sequence,
    classes: Sequence[str] | None = None,
    source: str = "resnetlab",
    input_size: Sequence[int] | None = None,
) -> None:
    """Write ``model``'s weights and the metadata that rebuilds it to ``path`` (atomically).

    ``model`` must come from :func:`resnetlab.create_model` (it carries ``resnetlab_name``
    and ``resnetlab_kwargs``).  ``mean``/``std`` are the input normalization on the [0, 1]
    RGB scale; ``classes`` defaults to the class indices as strings; ``input_size`` to the
    registered model's.
    """
    name = getattr(model, "resnetlab_name", None)
    kwargs = getattr(model, "resnetlab_kwargs", None)
    if name is None or kwargs is None:
        raise WeightsError("save_weights needs a model built by resnetlab.create_model (it records name and kwargs)")
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise WeightsError(f"model kwargs cannot be written as JSON: {exc}") from None
    size = tuple(input_size) if input_size is not None else tuple(model_info(name).input_size)
    n_out = _num_outputs(model) or kwargs.get("num_classes")
    names = [str(i) for i in range(n_out)] if classes is None else [str(c) for c in classes]
    if n_out is not None and len(names) != n_out:
        raise WeightsError(f"{len(names)} class names for a model with {n_out} outputs")
    as_list = lambda v: torch.as_tensor(v, dtype=torch.float64).tolist()  # noqa: E731
    meta = WeightsMeta(name, dict(kwargs), as_list(mean), as_list(std), size, names, source)
    WeightsMeta.from_metadata(meta.to_metadata(), where="save_weights")  # same checks as on load
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_metadata()))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file beside a weights file (``config.json``, ``preprocessor_config.json``);
    ``{}`` when absent; unreadable or not an object: a :class:`WeightsError`."""
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(found, dict):
        raise WeightsError(f"{path}: not a JSON object")
    return found


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header of ``path``, checked against the file's size (offsets, dtypes,
    shapes): a :class:`WeightsError` for a truncated or corrupt file, before any tensor is read."""
    where = str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{where}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER_BYTES:
                raise WeightsError(f"{where}: not a safetensors file (expected an 8-byte header length, then a JSON "
                                   f"header; the file starts with {head!r})" + (
                                       "; it looks like a PyTorch checkpoint: convert it with `resnetlab import "
                                       "torchvision|timm|akamaster|transformers FILE -o OUT.safetensors`"
                                       if written_by_torch_save(head) else ""))
            if 8 + n > size:
                raise WeightsError(f"{where}: truncated safetensors file (its header alone needs {8 + n} bytes, the "
                                   f"file has {size})")
            raw = f.read(n)
    except FileNotFoundError:
        raise WeightsError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise WeightsError(f"{where}: is a directory, not a weights file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{where}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{where}: not a safetensors file (header is not a JSON object)")
    data_size = size - 8 - n
    end_max = 0
    for key, info in header.items():
        if key == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise WeightsError(f"{where}: corrupt metadata")
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            nbytes = _DTYPE_BYTES[dtype] * math.prod(shape)
            ok = all(_is_pos_int(d) or d == 0 for d in shape) and 0 <= begin <= end and end - begin == nbytes
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise WeightsError(f"{where}: corrupt entry for tensor {key!r}")
        end_max = max(end_max, end)
    if end_max != data_size:
        state = "truncated" if end_max > data_size else "corrupt (trailing bytes)"
        raise WeightsError(f"{where}: {state}: tensors need {end_max} data bytes, file has {data_size}")
    return header


def read_meta(path: str | os.PathLike) -> WeightsMeta:
    """Read and check only the metadata of the weights file ``path`` (no tensors loaded)."""
    header = read_header(Path(path))
    return WeightsMeta.from_metadata(header.get("__metadata__") or {}, where=str(path))


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse ``state_dict`` unless its keys and shapes are exactly ``model``'s.

    The :class:`WeightsError` names the missing, unexpected and mis-shaped tensors.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {got[k]} (model wants {expected[k]})" for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or shapes):
        return

    def few(items: list[str]) -> str:
        # Weights first: BN step counters only add noise to the message.
        items = sorted(items, key=lambda s: "num_batches_tracked" in s)
        more = f", ... ({len(items)} in all)" if len(items) > 4 else ""
        return ", ".join(items[:4]) + more

    parts = []
    if shapes:
        parts.append(f"shape mismatch: {few(shapes)}")
    if missing:
        parts.append(f"missing: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected: {few(unexpected)}")
    arch = getattr(model, "resnetlab_name", type(model).__name__)
    raise WeightsError(f"{where}: weights do not fit {arch}: " + "; ".join(parts))


def load_weights(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
) -> tuple[nn.Module, WeightsMeta]:
    """Load the weights file ``path``; returns ``(model, meta)`` with the model in eval mode and
    ``meta`` also riding on it as ``model.pretrained_meta`` (as :func:`resnetlab.from_pretrained`
    leaves it), so that :func:`resnetlab.evaluate.evaluate` finds its normalization and input size.

    Without ``model`` the architecture is rebuilt from the metadata.  With ``model`` the
    file is loaded into it, and a different architecture is refused naming the tensors.
    ``features_only=True`` loads the whole file strictly, then returns the backbone's
    :class:`~resnetlab.models.features.FeatureNet` (stages ``out_indices``): the classifier is dropped.
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices is only used with features_only=True")
    path = Path(path)
    meta = read_meta(path)
    if model is None:
        try:
            model = create_model(meta.model, **meta.kwargs)
        except ResnetlabError as exc:
            raise WeightsError(f"{path}: cannot build {meta.model!r} from its metadata: {exc}") from None
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read tensors: {exc}") from None
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    if features_only:
        model = FeatureNet(model, out_indices)
    model.pretrained_meta = meta
    return model.to(map_location).eval(), meta
