"""Paper-style figures (matplotlib, Agg backend: no display needed).

Fig. 6: training error thin and dashed, validation error bold; plain nets left, ResNets
right, on the paper's axes (iterations in units of 1e4, error 0-20 %).  Fig. 7: the std of
each 3x3 layer's response, in layer order (top) and sorted in descending order (bottom).
Every figure carries ``note`` (e.g. "shortened: iterations=2000 (paper: 64000)") in its title.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..files import atomic_save  # noqa: E402

__all__ = ["Curve", "fig6_ymax", "plot_curves", "plot_responses", "plot_gradient_norms"]

#: Fig. 6 axes: 0-6.4e4 iterations, 0-20 % error
PAPER_FIG6_YMAX = 20.0
DPI = 80


@dataclass
class Curve:
    """Error curves of one training run, errors as fractions (0.0871 = 8.71 %)."""

    label: str
    train_iters: list[int] = field(default_factory=list)
    train_err: list[float] = field(default_factory=list)
    val_iters: list[int] = field(default_factory=list)
    val_err: list[float] = field(default_factory=list)

    @classmethod
    def from_metrics(cls, records: Iterable[Mapping[str, Any]], label: str) -> "Curve":
        """The curves of a run folder's ``metrics.jsonl`` records (``step`` with ``train_err``
        and/or ``val_err``)."""
        curve = cls(label)
        for rec in records:
            if rec.get("train_err") is not None:
                curve.train_iters.append(rec["step"])
                curve.train_err.append(rec["train_err"])
            if rec.get("val_err") is not None:
                curve.val_iters.append(rec["step"])
                curve.val_err.append(rec["val_err"])
        return curve


def _save(fig: plt.Figure, path: str | os.PathLike, note: str | None, title: str) -> Path:
    width = int(fig.get_figwidth() * 13)  # characters of a 10 pt title line
    text = title + ("\n" + textwrap.fill(note, width) if note else "")
    fig.suptitle(text, fontsize=10, color="firebrick" if note else "black")
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    finally:
        plt.close(fig)
    return path


def fig6_ymax(curves: Sequence[Curve], last: int) -> float:
    """The top of Fig. 6's error axis, in %: the paper's 20 % unless an error after the first 5 %
    of ``last`` iterations lies above it (the paper's axes cut off the first iterations, whose
    error is far higher), then the next multiple of 10 above that error."""
    worst = max((max([e for t, e in zip(c.val_iters + c.train_iters, c.val_err + c.train_err) if t >= 0.05 * last],
                     default=0.0) for c in curves), default=0.0)
    return PAPER_FIG6_YMAX if worst * 100 <= PAPER_FIG6_YMAX else min(100.0, 10 * (int(worst * 10) + 1))


def plot_curves(
    panels: Mapping[str, Sequence[Curve]],
    path: str | os.PathLike,
    *,
    note: str | None = None,
    title: str = "Training curves (He et al. 2015, Fig. 6)",
    held_out: str = "validation",
    paper: Mapping[str, tuple[int, float]] | None = None,
    length: int | None = None,
) -> Path:
    """Fig. 6: one panel per entry of ``panels`` (e.g. ``{"plain": [...], "ResNet": [...]}``),
    side by side with a shared y axis.  Dashed thin lines are training error, bold lines the
    ``held_out`` error (validation or test), one colour per run; ``paper`` maps a curve's label
    to the paper's ``(iteration, error)``, drawn as a hollow circle in the curve's colour; the x
    axis spans ``length`` iterations (default: the longest curve) in every panel.  The
    paper's axes (0-20 %) are kept unless an error after the first 5 % of the iterations lies
    above them, then the axis grows to show it (shortened runs)."""
    paper = paper or {}
    last = length or max((max(c.train_iters + c.val_iters, default=0) for cs in panels.values() for c in cs),
                         default=0)
    ymax = fig6_ymax([c for cs in panels.values() for c in cs], last)
    unit = 1e4 if last >= 1e4 else 1.0  # the paper's "iter. (1e4)"; plain iterations for short runs
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        labelled = []  # (line, label): given to legend() explicitly, so that any name shows (even "_x")
        for i, c in enumerate(curves):
            color = f"C{i}"
            ax.plot([t / unit for t in c.train_iters], [100 * e for e in c.train_err], "--", lw=0.8, color=color)
            (line,) = ax.plot([t / unit for t in c.val_iters], [100 * e for e in c.val_err], "-", lw=2.2, color=color)
            labelled.append((line, c.label))
            if c.label in paper:
                at, err = paper[c.label]
                ax.plot([at / unit], [100 * err], "o", ms=9, mfc="none", mew=1.8, color=color)
        ax.set_title(name)
        ax.set_xlabel("iter. (1e4)" if unit == 1e4 else "iter.")
        ax.set_ylim(0, ymax)
        ax.set_xlim(0, last / unit * 1.02 if length else None)
        ax.grid(alpha=0.3)
        if any(c.val_iters for c in curves):  # the labels sit on the validation lines
            ax.legend(*zip(*labelled), loc="upper right", fontsize=8)
    circles = ", o: paper" if paper else ""
    axes[0][0].set_ylabel(f"error (%)  [dashed: train, bold: {held_out}{circles}]", fontsize=9)
    return _save(fig, path, note, title)


def plot_responses(
    responses: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    note: str | None = None,
    title: str = "Std of layer responses (He et al. 2015, Fig. 7)",
) -> Path:
    """Fig. 7: each net's per-layer response std in layer order (top) and sorted descending (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    for i, (label, stds) in enumerate(responses.items()):
        style = "--" if label.lower().startswith("plain") else "-"
        xs = range(1, len(stds) + 1)
        top.plot(xs, stds, style, color=f"C{i}", label=label, lw=1.2)
        bottom.plot(xs, sorted(stds, reverse=True), style, color=f"C{i}", label=label, lw=1.2)
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    return _save(fig, path, note, title)


def plot_gradient_norms(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    *,
    note: str | None = None,
    title: str = "Per-layer gradient norm ||dL/dW||, plain vs residual",
) -> Path:
    """One panel per moment of training (e.g. ``"init"``, ``"iter 500"``), each holding one
    line per net: the gradient norm of every weighted layer in forward order, log scale."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (moment, nets) in zip(axes[0], panels.items()):
        for i, (label, norms) in enumerate(nets.items()):
            style = "--" if label.lower().startswith("plain") else "-"
            ax.plot(range(1, len(norms) + 1), norms, style, color=f"C{i}", label=label, lw=1.2)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(moment)
        ax.set_xlabel("layer index")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("||dL/dW||")
    return _save(fig, path, note, title)
