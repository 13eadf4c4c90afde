"""Foreign torch pickles, read without running any of their code.

``torch.load(..., weights_only=True)`` builds tensors and plain containers and refuses every other
class or function a pickle names: nothing in the file can run (torch>=2.6: CVE-2025-32434).  The
checkpoints people have name more than that: a Lightning ``.ckpt`` keeps the module's
hyper-parameters (an ``AttributeDict``, ``functools.partial``, the user's own config classes), a
training script keeps numpy scalars or its ``argparse.Namespace``, and ``torch.save(model)`` pickles
the whole ``nn.Module``.  Here each such name becomes a stand-in: a fresh class of the same name
(:class:`Inert`) that keeps the arguments and the state the pickle gives it and does nothing else.
The real class or function is never imported, so nothing of the file runs, and the tensors come out
as they were saved.  A pickle that names what only serves to run code (``builtins.exec``,
``os.system``, ``subprocess.Popen``, ...: :data:`CODE_MODULES`) is refused outright, naming it.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import WeightsError

__all__ = ["SAFE_GLOBALS", "CODE_MODULES", "Inert", "written_by_torch_save", "load_pickle", "is_module",
           "module_state_dict"]

#: Classes rebuilt as themselves: argparse.Namespace is the training arguments that torchvision's
#: reference scripts and timm's train.py save with the weights (``args``); rebuilding one only sets
#: attributes, so it is as safe to unpickle as a dict.
SAFE_GLOBALS = (argparse.Namespace,)

#: Modules whose names in a checkpoint can only mean running code on load: such a file is refused.
#: (The stand-ins would keep them inert as well; the refusal tells the user what the file is.)
CODE_MODULES = frozenset({"builtins", "os", "posix", "nt", "sys", "subprocess", "importlib", "runpy", "pickle",
                          "marshal", "ctypes", "shutil", "socket", "code", "pty", "webbrowser"})

_MAX_TRIES = 256  # reloads while the unpickler names classes the static scan did not see (legacy files: all)


class Inert:
    """The stand-in for a class or function a checkpoint names: the pickle may create or call it
    and give it state, and it only keeps ``args`` and ``state``.  ``pickled_as`` is the name it
    stands for."""

    pickled_as: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Inert":
        record = super().__new__(cls)
        record.args, record.state = args, None
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # everything was kept by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.pickled_as}, not rebuilt>"


def written_by_torch_save(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first bytes) is what ``torch.save`` writes: a zip
    archive, or before torch 1.6 a pickle."""
    return head.startswith((b"PK\x03\x04", b"\x80"))


def _stand_in(name: str, kind: str) -> type:
    """A class for ``name``: an :class:`Inert` record, or for a dict or list subclass (the
    unpickler fills those only when they are one) a plain dict / a list subclass."""
    if kind == "dict":
        return dict
    module, _, qualname = name.rpartition(".")
    base = list if kind == "list" else Inert
    return type(qualname, (base,), {"pickled_as": name, "__module__": module, "__qualname__": qualname})


def _global_name(text: str) -> str | None:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+) whose module", text)
    if not found:
        return None
    name = found.group(1) or found.group(2)
    return name if "." in name else f"builtins.{name}"  # torch drops "builtins."


def _admit(name: str, path: Path) -> None:
    if name.split(".")[0] in CODE_MODULES:
        raise WeightsError(f"{path}: refused: the pickle names {name}, which a checkpoint only names to run code on load "
                           "(read with weights_only=True; nothing ran)")


def _plain(exc: BaseException) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message carries terminal colour codes


def load_pickle(path: Path) -> Any:
    """What the ``torch.save`` file ``path`` holds, read with ``weights_only=True``; every class or
    function other than tensors, plain containers and :data:`SAFE_GLOBALS` is an :class:`Inert`
    stand-in.  A damaged file, or one that names code (:data:`CODE_MODULES`), is a
    :class:`WeightsError`."""
    kinds: dict[str, str] = {}
    try:  # a static scan of the pickle (zip files); names it misses are added as the loads meet them
        scanned = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 -- a legacy or damaged file: the load below reports it
        scanned = []
    for name in scanned:
        _admit(name, path)
        kinds[name] = "record"
    failure: BaseException | None = None
    text = ""
    for _ in range(_MAX_TRIES):
        allowed = [*SAFE_GLOBALS, *((_stand_in(name, kind), name) for name, kind in kinds.items())]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 -- the restricted unpickler fails in many ways on junk; none ran code
            failure, text = exc, _plain(exc)
        name = _global_name(text)
        if name is not None and name not in kinds:
            _admit(name, path)
            kinds[name] = "record"
            continue
        container = re.search(r"Can only (SETITEMS?|append) .*but got <class '([\w.]+)'>", text)
        if container and kinds.get(container.group(2)) == "record":
            kinds[container.group(2)] = "list" if container.group(1) == "append" else "dict"
            continue
        break
    with open(path, "rb") as f:
        head = f.read(8)
    if not written_by_torch_save(head):
        raise WeightsError(f"{path}: not a PyTorch checkpoint (expected a file written by torch.save, a zip archive "
                           f"or a pickle; the file starts with {head!r})")
    detail = text.split("WeightsUnpickler error:")[-1].strip()  # after torch's general advice, if any
    reason = detail.splitlines()[0].strip() if detail else ""
    if isinstance(failure, pickle.UnpicklingError):
        legacy_model = "persistent_load" in reason and head.startswith(b"\x80")
        raise WeightsError(f"{path}: refused: the pickle holds what weights_only=True cannot rebuild even as an "
                           f"inert stand-in ({reason or 'unsupported object'})" + (
                               "; a whole model saved in torch's pre-1.6 format keeps its classes' source code: "
                               "save its state_dict() instead" if legacy_model else ""))
    raise WeightsError(f"{path}: a damaged PyTorch checkpoint (torch.load: {type(failure).__name__}"
                       f"{': ' + reason if reason else ''})")


def is_module(obj: Any) -> bool:
    """Whether ``obj`` is the stand-in of a pickled ``nn.Module`` (``torch.save(model)``)."""
    state = obj.state if isinstance(obj, Inert) else None
    return isinstance(state, dict) and all(isinstance(state.get(k), dict) for k in ("_parameters", "_buffers",
                                                                                    "_modules"))


def module_state_dict(module: Inert, prefix: str = "") -> dict[str, torch.Tensor]:
    """What ``state_dict()`` of the pickled module would give, read from its stand-in: parameters,
    persistent buffers and the submodules' under ``name.``."""
    state = module.state
    tensors: dict[str, torch.Tensor] = {}
    transient = state.get("_non_persistent_buffers_set")
    transient = transient if isinstance(transient, (set, frozenset)) else set()
    for group in ("_parameters", "_buffers"):
        for name, value in state[group].items():
            if isinstance(value, torch.Tensor) and not (group == "_buffers" and name in transient):
                tensors[f"{prefix}{name}"] = value.detach()
    for name, child in state["_modules"].items():
        if is_module(child):
            tensors.update(module_state_dict(child, f"{prefix}{name}."))
    return tensors
