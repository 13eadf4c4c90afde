"""What the experiments show: markdown tables, the paper's claims checked against ours, figures.

Every function here formats measurements it is given; none measures or trains.  Each CIFAR
table names the data set it was measured on, so a smoke run on ``digits`` can never read as
CIFAR-10.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from ..analysis.plots import Curve, plot_curves, plot_gradient_norms, plot_responses
from ..registry import model_info

__all__ = ["fmt_value", "markdown_table", "shortened_label", "data_line", "label", "depth_trend", "family_gap",
           "table1", "table6", "fig6", "fig7", "gradients"]


def fmt_value(value: Any) -> str:
    """``(20, 56)`` -> ``"[20,56]"`` (as typed on the command line); other values as ``str``."""
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pct(err: float | None) -> str:
    return "-" if err is None else f"{100 * err:.2f}"


def _pct_sign(err: float) -> str:
    return f"{100 * err:.2f} %"


def _claims_text(claims: list[str]) -> str:
    return "\n" + "".join(f"- {line}\n" for line in claims) if claims else ""


def shortened_label(note: str | None) -> str:
    """The bold first line of every table and plot that did not run the paper's settings."""
    return f"**{note}**\n\n" if note else ""


def data_line(dataset: str) -> str:
    """The line under a CIFAR table saying what it was measured on."""
    if dataset == "cifar10":
        return "Data: cifar10, the 45k/5k split (45k training images, the fixed 5k hold-out for validation).\n\n"
    return f"Data: **{dataset}**, not CIFAR-10: a smoke run, whose numbers are not the paper's experiment.\n\n"


def label(model: str) -> str:
    """``cifar_plain56`` -> ``plain-56``, ``cifar_resnet110`` -> ``ResNet-110`` (the paper's names)."""
    info = model_info(model)
    return f"{'plain' if info.family.endswith('plain') else 'ResNet'}-{info.defaults['depth']}"


def _verdict(ours: str, paper_says: str) -> str:
    return f"(paper: {paper_says}) - {'as in the paper' if ours == paper_says else 'NOT as in the paper'}"


def depth_trend(rows: list[dict], family: str, key: str, what: str, paper_says: str, fmt: Callable) -> list[str]:
    """One line comparing the deepest and shallowest ``family`` net on ``rows[i][key]``:
    is the deeper one ``"larger"`` or ``"smaller"``, and is that what the paper reports?"""
    fam = sorted((r for r in rows if r["family"] == family and r[key] is not None), key=lambda r: r["depth"])
    if len(fam) < 2:
        return []
    shallow, deep = fam[0], fam[-1]
    ours = "larger" if deep[key] > shallow[key] else "smaller"
    return [f"{what}: {family}-{deep['depth']} {fmt(deep[key])} vs {family}-{shallow['depth']} "
            f"{fmt(shallow[key])}: the deeper net's is {ours} {_verdict(ours, paper_says)}"]


def family_gap(rows: list[dict], key: str, what: str, paper_says: str, fmt: Callable) -> list[str]:
    """Lines comparing ResNet and plain nets of equal depth on ``key``."""
    lines = []
    for depth in sorted({r["depth"] for r in rows}):
        pair = {r["family"]: r for r in rows if r["depth"] == depth}
        if {"plain", "ResNet"} <= set(pair):
            ours = "smaller" if pair["ResNet"][key] < pair["plain"][key] else "larger"
            lines.append(f"{what}: ResNet-{depth} {fmt(pair['ResNet'][key])} vs plain-{depth} "
                         f"{fmt(pair['plain'][key])}: the ResNet's is {ours} {_verdict(ours, paper_says)}")
    return lines


def table1(rows: list[dict], missing: list[str], paper_gmacs: dict[str, float], note: str | None) -> str:
    """Table 1: params and multiply-adds of each model beside the paper's figure."""
    md_rows = []
    for r in rows:
        theirs, rel = r["paper_gmacs"], r["rel_diff"]
        md_rows.append([r["model"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.2f}",
                        "-" if theirs is None else f"{theirs}", "-" if rel is None else f"{100 * rel:+.1f} %"])
    md_rows += [[name, "not registered", "-", f"{paper_gmacs[name]}", "-"] for name in missing]
    return shortened_label(note) + markdown_table(
        ["model", "params (M)", "ours GMACs", "paper GMACs", "ours vs paper"], md_rows)


def table6(rows: list[dict], note: str | None, dataset: str) -> tuple[str, list[str]]:
    """Table 6: validation error by depth (best; mean ± std over seeds) beside the paper's test
    error; the claim: the error falls with depth up to 110 layers."""
    md_rows = []
    for r in rows:
        errs = r["val_err"]
        ours = f"{100 * r['best']:.2f}" + (f" ({100 * r['mean']:.2f} ± {100 * r['std']:.2f}, {len(errs)} runs)"
                                           if len(errs) > 1 else "")
        paper_cell = "-" if r["paper_test_err_pct"] is None else f"{r['paper_test_err_pct']}"
        if r.get("paper_mean_std"):
            paper_cell += " (%.2f ± %.2f)" % tuple(r["paper_mean_std"])
        md_rows.append([r["model"], f"{r['params'] / 1e6:.2f}M",
                        "-" if r["paper_params_m"] is None else f"{r['paper_params_m']}M", ours, paper_cell])
    claims = depth_trend([r for r in rows if r["depth"] <= 110], "ResNet", "mean", "mean validation error",
                         "smaller", _pct_sign)
    table = shortened_label(note) + data_line(dataset) + markdown_table(
        ["net", "params", "paper params", f"ours: {dataset} validation error % (best; mean ± std)",
         "paper: CIFAR-10 test error %"], md_rows)
    return table + _claims_text(claims), claims


def fig6(rows: list[dict], curves: dict[str, list[Curve]], note: str | None, dataset: str,
         folder: Path) -> tuple[str, list[str]]:
    """Fig. 6: final errors and the training curves (``folder/fig6.png``); the claims: deeper
    plain nets end with higher training and validation error, deeper ResNets with lower."""
    plot_curves({k: v for k, v in curves.items() if v}, folder / "fig6.png", note=note,
                title=f"Training on {dataset} (He et al. 2015, Fig. 6)")
    claims = (depth_trend(rows, "plain", "final_val_err", "validation error", "larger", _pct_sign)
              + depth_trend(rows, "ResNet", "final_val_err", "validation error", "smaller", _pct_sign)
              + depth_trend(rows, "plain", "final_train_err", "training error", "larger", _pct_sign))
    md_rows = [[f"{r['family']}-{r['depth']}", _pct(r["final_train_err"]), _pct(r["final_val_err"])] for r in rows]
    table = shortened_label(note) + data_line(dataset) + markdown_table(
        ["net", f"final training error % (last logged, {dataset})", f"final validation error % ({dataset})"],
        md_rows)
    return table + _claims_text(claims) + "\n![Fig. 6](fig6.png)\n", claims


def fig7(rows: list[dict], note: str | None, dataset: str, n_images: int, folder: Path) -> tuple[str, list[str]]:
    """Fig. 7: std of each 3x3 layer's response (``folder/fig7.png``); the claims: ResNets
    respond less than their plain counterparts, deeper ResNets less again."""
    plot_responses({r["label"]: [layer["std"] for layer in r["layers"]] for r in rows}, folder / "fig7.png",
                   note=note, title=f"Std of layer responses on {dataset} validation (He et al. 2015, Fig. 7)")
    claims = (family_gap(rows, "mean_std", "mean response std", "smaller", "{:.3f}".format)
              + depth_trend(rows, "ResNet", "mean_std", "mean response std", "smaller", "{:.3f}".format))
    md_rows = []
    for r in rows:
        stds = [layer["std"] for layer in r["layers"]]
        md_rows.append([r["label"], len(stds), f"{statistics.fmean(stds):.3f}", f"{max(stds):.3f}",
                        f"{min(stds):.3f}"])
    table = shortened_label(note) + data_line(dataset) + markdown_table(
        ["net", "3x3 layers", "mean response std", "max", "min"], md_rows)
    table += f"\nMeasured on the {n_images} {dataset} validation images, eval mode.\n" + _claims_text(claims)
    return table + "\n![Fig. 7](fig7.png)\n", claims


def gradients(rows: list[dict], note: str | None, dataset: str, batch: int, folder: Path) -> str:
    """Per-layer gradient norms of plain and residual nets (``folder/gradients.png``)."""
    panels: dict[str, dict[str, list[float]]] = {}
    md_rows = []
    for r in rows:
        moment = "initialisation" if r["at"] == 0 else f"iteration {r['at']}"
        values = [layer["norm"] for layer in r["layers"]]
        panels.setdefault(moment, {})[r["label"]] = values
        md_rows.append([moment, r["label"], f"{values[0]:.3g}", f"{statistics.median(values):.3g}",
                        f"{values[-1]:.3g}", f"{max(values) / max(min(values), 1e-30):.3g}"])
    plot_gradient_norms(panels, folder / "gradients.png", note=note,
                        title=f"Per-layer gradient norm ||dL/dW|| on {dataset}, plain vs residual")
    table = shortened_label(note) + data_line(dataset) + markdown_table(
        ["moment", "net", "first layer", "median layer", "fc", "max/min over layers"], md_rows)
    table += f"\n||dL/dW|| of each conv/fc weight for one fixed batch of {batch} {dataset} training images.\n"
    return table + "\n![gradient norms](gradients.png)\n"
