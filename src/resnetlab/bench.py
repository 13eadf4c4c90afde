"""Benchmarks: ours against a named baseline, in one process, interleaved.

Both contenders run in the same process on the same inputs; each repeat times the
baseline and ours back to back (their order alternates between repeats) so that load
from other processes hits both alike.  Throughputs are reported as the median over
repeats with the min..max spread, and the speedup as the median of the per-repeat
ratios.  Peak memory is the process's peak resident set on CPU (reset before each
contender where Linux allows it) and the peak allocated memory on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from .analysis.complexity import complexity
from .config import apply_overrides
from .device import resolve_device
from .errors import ConfigError
from .inference import optimize
from .machine import describe
from .recipes import get_recipe
from .registry import create_model, model_info
from .timing import calls_per_second, sync
from .train import Schedule, build, make_train_step

__all__ = ["compare", "bench_infer", "bench_train", "cpu_threads", "format_table", "gemm_peak_flops", "record"]


def record(out_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Append ``result`` as one JSON line to ``out_dir/bench.jsonl`` (created if needed)."""
    path = Path(out_dir) / "bench.jsonl"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the VmHWM (peak RSS) counter of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> Optional[float]:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def compare(
    baseline: Callable[[], Any],
    ours: Callable[[], Any],
    *,
    items_per_call: int,
    device: torch.device,
    repeats: int = 5,
    warmup: int = 2,
    min_time: float = 1.0,
) -> dict[str, Any]:
    """Time ``baseline()`` and ``ours()`` interleaved; throughputs in items/s.

    Each of ``repeats`` rounds runs each callable for at least ``min_time`` seconds (and
    at least one call) after ``warmup`` untimed calls of each.  Returns ``baseline_img_s``,
    ``img_s`` (medians), their ``*_spread`` ([min, max]), ``speedup`` (median of the
    per-round ratios) with ``speedup_spread``, ``*_peak_mem_mb`` and ``repeats``.
    """
    if repeats < 1 or warmup < 0 or min_time < 0:
        raise ConfigError("repeats must be >= 1, warmup >= 0 and min_time >= 0")
    contenders = {"baseline": baseline, "ours": ours}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    peaks: dict[str, Optional[float]] = {}
    for name, fn in contenders.items():
        _reset_peak_memory(device)
        for _ in range(warmup):
            fn()
        sync(device)
        peaks[name] = _peak_memory_mb(device)
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for name in order:
            fn = contenders[name]
            _reset_peak_memory(device)
            rates[name].append(calls_per_second(fn, device, min_time) * items_per_call)
            peak = _peak_memory_mb(device)
            if peak is not None and (peaks[name] is None or peak > peaks[name]):
                peaks[name] = peak
    ratios = [o / b for o, b in zip(rates["ours"], rates["baseline"])]

    def spread(values: list[float]) -> list[float]:
        return [round(min(values), 2), round(max(values), 2)]

    return {
        "baseline_img_s": round(statistics.median(rates["baseline"]), 2),
        "img_s": round(statistics.median(rates["ours"]), 2),
        "speedup": round(statistics.median(ratios), 3),
        "baseline_img_s_spread": spread(rates["baseline"]),
        "img_s_spread": spread(rates["ours"]),
        "speedup_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "baseline_peak_mem_mb": peaks["baseline"],
        "peak_mem_mb": peaks["ours"],
        "repeats": repeats,
    }


def gemm_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, min_time: float = 0.5) -> float:
    """The dense matrix multiply throughput this device attains (FLOP/s) in ``dtype``, with the
    current thread setting: the best of three timed rounds of square matmuls (2048 on CPU,
    8192 on GPUs). MFU figures divide by this measured ceiling, not by a spec sheet's."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (library initialisation, clocks)
    return 2 * n**3 * max(calls_per_second(lambda: a @ b, device, min_time) for _ in range(3))


def _utilisation(result: dict[str, Any], flops_per_image: float, peak: Optional[float],
                 peak_dtype: str) -> dict[str, Any]:
    """MFU fields of a bench result: model FLOPs per image (2 x conv/fc multiply-adds; x3 for a
    training step: forward + two backward products) over the measured GEMM ceiling."""
    fields: dict[str, Any] = {"flops_per_image": int(flops_per_image)}
    if peak:
        fields.update(
            peak_tflops=round(peak / 1e12, 4), peak_dtype=peak_dtype,
            mfu=round(result["img_s"] * flops_per_image / peak, 4),
            baseline_mfu=round(result["baseline_img_s"] * flops_per_image / peak, 4),
        )
    return fields


@contextlib.contextmanager
def cpu_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads (``None``: leave torch's setting), then restore."""
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def bench_infer(
    model: str,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    input_size: Optional[int] = None,
    compile: bool = False,
    runtime: str = "torch",
    quantize: Optional[str] = None,
    repeats: int = 5,
    warmup: int = 2,
    min_time: float = 1.0,
    threads: Optional[int] = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Inference images/s of :func:`resnetlab.inference.optimize` against eager PyTorch.

    The baseline is what torchvision users run: the same architecture in eager mode, fp32,
    NCHW, under ``torch.no_grad()``.  Inputs are random (speed does not depend on them);
    INT8 is calibrated on random inputs here, so its accuracy is measured elsewhere
    (``benchmarks/int8_accuracy.py``).  ``threads`` sets the CPU threads of both contenders
    (on a CPU shared with other work, fewer threads than cores gives steadier figures).
    Returns one JSON-ready dict: the ``resnetlab bench --json`` line.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    with cpu_threads(threads):
        return _bench_infer(model, batch_size, dev, input_size, compile, runtime, quantize,
                            repeats, warmup, min_time, seed)


def _bench_infer(model: str, batch_size: int, dev: torch.device, input_size: Optional[int], compile: bool,
                 runtime: str, quantize: Optional[str], repeats: int, warmup: int, min_time: float,
                 seed: int) -> dict[str, Any]:
    info = model_info(model)
    size = info.input_size if input_size is None else (info.input_size[0], input_size, input_size)
    torch.manual_seed(seed)
    net = create_model(model).eval().to(dev)
    x = torch.randn(batch_size, *size, device=dev)
    calibration = torch.randn(max(batch_size, 32), *size) if quantize else None
    fast = optimize(net, x, compile=compile, runtime=runtime, quantize=quantize, calibration=calibration)

    def baseline() -> None:
        with torch.no_grad():
            net(x)

    def ours() -> None:
        fast(x)

    result: dict[str, Any] = {
        "model": model,
        "batch_size": batch_size,
        "device": str(dev),
        "input_size": list(size),
        "baseline": "eager fp32 NCHW (torchvision-style)",
        "ours": " + ".join(fast.report["steps"]) + (" [int8]" if quantize else " [fp32]"),
    }
    result.update(compare(baseline, ours, items_per_call=batch_size, device=dev,
                          repeats=repeats, warmup=warmup, min_time=min_time))
    macs = complexity(net, size)["macs"]
    peak = None if quantize else gemm_peak_flops(dev)
    result.update(_utilisation(result, 2 * macs, peak, "float32"))
    result.update(
        setup_s=fast.report["setup_s"],
        max_rel_diff=round(fast.report["max_rel_diff"], 6),
        same_top1=fast.report["same_top1"],
        **describe(dev),
    )
    return result


def bench_train(
    model: str,
    *,
    batch_size: int = 128,
    device: str = "cpu",
    recipe: str = "paper_cifar",
    overrides: Optional[dict[str, Any]] = None,
    repeats: int = 5,
    warmup: int = 2,
    min_time: float = 1.0,
    threads: Optional[int] = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Training images/s of resnetlab's engine step against a plain eager loop.

    Ours is the real step of :func:`resnetlab.train.make_train_step` on the model and
    optimizer of :func:`resnetlab.train.build`, as ``train()`` runs them for ``recipe`` (+ ``overrides``, e.g. ``{"compile": True}``): channels_last,
    foreach SGD with momentum and weight decay.  The baseline is the loop people write:
    the same model and optimizer settings, eager, NCHW, fp32, a for-loop SGD
    (``foreach=False``), ``zero_grad / cross_entropy / backward / step``.  Both train on
    the same fixed random batch (the data pipeline is not timed).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    with cpu_threads(threads):
        return _bench_train(model, batch_size, dev, recipe, overrides or {}, repeats, warmup, min_time, seed)


def _bench_train(model: str, batch_size: int, dev: torch.device, recipe: str, overrides: dict[str, Any],
                 repeats: int, warmup: int, min_time: float, seed: int) -> dict[str, Any]:
    cfg = apply_overrides(get_recipe(recipe), {**overrides, "model": model, "batch_size": batch_size})
    info = model_info(model)
    torch.manual_seed(seed)
    x = torch.randn(batch_size, *info.input_size, device=dev)
    y = torch.randint(0, info.num_classes, (batch_size,), device=dev)

    torch.manual_seed(seed)
    plain = create_model(model, **cfg.model_kwargs).to(dev).train()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay, foreach=False)

    def baseline() -> None:
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x), y).backward()
        plain_opt.step()

    # ours: exactly as train() builds it
    torch.manual_seed(seed)
    state = build(cfg, info.num_classes, dev, Schedule(cfg.lr, "constant", total=1))
    state.model.train()
    step = make_train_step(state, cfg)
    x_ours = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

    def ours() -> None:
        step(x_ours, y)

    steps = [s for s, on in (("channels_last", cfg.channels_last), ("torch.compile", cfg.compile),
                             (f"amp {cfg.amp}", cfg.amp != "off")) if on]
    result: dict[str, Any] = {
        "model": model,
        "batch_size": batch_size,
        "device": str(dev),
        "baseline": "eager fp32 NCHW loop, for-loop SGD",
        "ours": "resnetlab.train step (" + " + ".join(steps + ["fused SGD" if dev.type == "cuda" else "foreach SGD"]) + f"; recipe {recipe})",
    }
    result.update(compare(baseline, ours, items_per_call=batch_size, device=dev,
                          repeats=repeats, warmup=warmup, min_time=min_time))
    peak_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp, torch.float32)
    macs = complexity(plain, info.input_size)["macs"]
    result.update(_utilisation(result, 3 * 2 * macs, gemm_peak_flops(dev, peak_dtype), str(peak_dtype)[6:]))
    result.update(describe(dev))
    return result


def format_table(result: dict[str, Any]) -> str:
    """A bench result as a small text table: baseline and ours, medians, spreads, memory."""
    rows = [
        ("", "img/s (median)", "min..max", "peak mem MB"),
        (result["baseline"], f"{result['baseline_img_s']:.2f}",
         "{:.2f}..{:.2f}".format(*result["baseline_img_s_spread"]), str(result["baseline_peak_mem_mb"])),
        (result["ours"], f"{result['img_s']:.2f}",
         "{:.2f}..{:.2f}".format(*result["img_s_spread"]), str(result["peak_mem_mb"])),
        ("speedup (ours / baseline)", f"{result['speedup']:.2f}x",
         "{:.2f}..{:.2f}".format(*result["speedup_spread"]), ""),
    ]
    if "mfu" in result:
        rows.append((f"MFU (of the measured {result['peak_dtype']} GEMM ceiling, {result['peak_tflops']:.3f} TFLOP/s)",
                     f"{100 * result['mfu']:.1f} %", f"baseline {100 * result['baseline_mfu']:.1f} %", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{result['model']}  batch {result['batch_size']}  device {result['device']}  "
             f"({result['repeats']} interleaved repeats, torch {result['torch']}, {result['threads']} threads)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
