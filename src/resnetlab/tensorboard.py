"""TensorBoard event files of a training run, beside its ``metrics.jsonl``.

``tensorboard --logdir runs`` then shows every run under ``runs/``: the training loop logs its
scalars (``train/loss``, ``train/err``, ``train/lr``, ``train/img_s``, ``val/err``, ...) and, at
the end, the ``curves.png`` plot. The events go to ``OUT_DIR/tensorboard`` through
``torch.utils.tensorboard.SummaryWriter``.

TensorBoard is optional (``pip install 'resnetlab[tensorboard]'``) and never fails a run:
without the package one line says so (once per process) and the log does nothing; an
``OSError`` while writing (a full disk, a folder that cannot be made) is reported once and
the log turns itself off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from .data.images import decode_image
from .errors import DataError
from .runfolder import TENSORBOARD

__all__ = ["TensorBoardLog", "MISSING_MESSAGE"]

MISSING_MESSAGE = ("tensorboard not installed: this run writes no TensorBoard event files "
                   "(metrics.jsonl has every number); pip install 'resnetlab[tensorboard]'")

#: whether :data:`MISSING_MESSAGE` was printed by this process (a reproduce trains many runs)
_missing_reported = False


class TensorBoardLog:
    """Event files under ``out_dir / "tensorboard"``; ``enabled=False`` (or no ``tensorboard``
    package, or a write error) makes every method do nothing. ``purge_step`` (a resumed run: its
    checkpoint's step + 1) hides the events an earlier writer logged at that step or later."""

    def __init__(self, out_dir: Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.log_dir = Path(out_dir) / TENSORBOARD
        self._writer: Any = None
        if not enabled:
            return
        try:
            # optional dependency: torch.utils.tensorboard needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _report_missing()
            return
        try:
            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        except OSError as exc:
            self._turn_off(exc)

    @property
    def enabled(self) -> bool:
        """Whether events are being written."""
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """Log ``values`` (tag -> number; None is skipped) at ``step`` and flush them to disk, so
        that a running TensorBoard shows them now."""
        if self._writer is None:
            return
        try:
            for tag, value in values.items():
                if value is not None:
                    self._writer.add_scalar(tag, float(value), global_step=step)
            self._writer.flush()
        except OSError as exc:
            self._turn_off(exc)

    def image(self, tag: str, png_path: Path, step: int) -> None:
        """Log the picture in ``png_path`` (e.g. ``curves.png``) under ``tag`` at ``step``; a
        missing or unreadable picture is reported on stderr and skipped."""
        if self._writer is None:
            return
        try:
            picture = decode_image(png_path)  # uint8 3 x H x W, transparency on white
        except DataError as exc:
            print(f"resnetlab: warning: TensorBoard image {tag!r} skipped: {exc}", file=sys.stderr)
            return
        try:
            self._writer.add_image(tag, picture, global_step=step, dataformats="CHW")
            self._writer.flush()
        except OSError as exc:
            self._turn_off(exc)

    def close(self) -> None:
        """Flush and close the event file (the log does nothing afterwards)."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        except OSError as exc:
            self._turn_off(exc)
        self._writer = None

    def _turn_off(self, exc: OSError) -> None:
        print(f"resnetlab: warning: TensorBoard log in {self.log_dir} turned off: cannot write "
              f"({exc.strerror or exc}); the run continues", file=sys.stderr)
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass  # already reported: the log is off


def _report_missing() -> None:
    global _missing_reported
    if not _missing_reported:
        print(MISSING_MESSAGE, file=sys.stderr)
        _missing_reported = True
