"""Atomic file writes: every file resnetlab writes (weights, checkpoints, exports, caches,
tables, figures, reports) goes through :func:`atomic_save`, so a crash or a full disk never
leaves a half-written file where a good one was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "atomic_write_text"]


def atomic_save(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash or a full disk during the write leaves any previous ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_save` of ``text`` (UTF-8)."""
    atomic_save(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
