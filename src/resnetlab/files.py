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

    A crash or a full disk during the write leaves any previous ``path`` intact; an ``OSError``
    names ``path`` (not the temporary file).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and os.path.basename(str(exc.filename)).startswith(f".{path.name}."):
            # the error names the file the user asked for, not the temporary one beside it
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_save` of ``text`` (UTF-8)."""
    atomic_save(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
