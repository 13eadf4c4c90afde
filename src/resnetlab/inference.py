"""Fast inference: :func:`optimize` turns a trained model into a callable that gives the
same outputs (fp32 paths) as fast as the machine allows.

fp32, in PyTorch: every BatchNorm that directly follows a convolution is folded into that
convolution (:func:`fold_batchnorm`; exact up to float rounding), weights and activations
go channels-last (the layout oneDNN's CPU convolutions and cuDNN's tensor cores want), and
optionally ``torch.compile`` with inductor *freezing* (weights become constants: convs are
pre-packed and fused with their ReLU and residual add).

INT8 (opt-in, CPU): the fp32 model is exported to ONNX and statically quantized by ONNX
Runtime (per-channel int8 weights, uint8 activations, QDQ graph) with activation ranges
calibrated on data the caller gives; the accuracy change against the fp32 model is
measured on labelled data the caller gives and returned in the report.  Needs the ``onnx``
extra (``pip install 'resnetlab[onnx]'``).  PyTorch's own PT2E x86 quantizer now lives in
the separate ``torchao`` package; ONNX Runtime's int8 kernels are the faster of the two.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union

import torch
import torch.fx
from torch import nn

from .errors import ConfigError
from .export import to_onnx
from .timing import calls_per_second

__all__ = ["OptimizedModel", "fold_batchnorm", "optimize", "output_difference"]

Batch = Union[torch.Tensor, Sequence[torch.Tensor]]
#: inputs (N, C, H, W), normalized as the model expects; or (inputs, targets); or an
#: iterable of either (e.g. a DataLoader)
Data = Union[torch.Tensor, tuple, Iterable[Batch]]


class OptimizedModel:
    """What :func:`optimize` returns: call it on a batch to get logits.

    Attributes:
        report: what was applied and what it cost (``steps``, ``runtime``, ``quantize``,
            ``compile_s``), the fp32 check on the example (``max_rel_diff``, ``same_top1``)
            and, for INT8, ``accuracy`` (top-1 of fp32 and int8, their difference and the
            top-1 agreement on the caller's labelled data).
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], report: dict[str, Any]) -> None:
        self._run = run
        self.report = report

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)


# ----------------------------------------------------------------------------- BN folding


def _fold_conv_bn_(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place: BN(W*x + b) = W'*x + b'.

    With s = gamma / sqrt(var + eps): W' = W * s (per output channel), b' = (b - mean) * s + beta.
    Computed in float64 so the folded conv matches conv-then-BN to float32 rounding.
    """
    dtype = conv.weight.dtype
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + beta).to(dtype), requires_grad=False)


class _Tracer(torch.fx.Tracer):
    """An fx tracer that also traces through modules built during ``forward`` (e.g. the
    slice ``self.classifier[:-1]`` of VGG's ``forward_head``), which are not submodules."""

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            self.path_of_module(m)
        except NameError:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)


def fold_batchnorm(model: nn.Module) -> torch.fx.GraphModule:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv before it.

    The model is traced with ``torch.fx``; a ``BatchNorm2d`` is folded when its only input
    is a ``Conv2d`` whose output feeds nothing else and when both modules are called once.
    Other BatchNorms stay as they are.  The original model is not changed.  Raises
    :class:`ConfigError` when the model cannot be traced.
    """
    model = copy.deepcopy(model).eval()
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise ConfigError(f"cannot fold BatchNorm: the model does not trace with torch.fx ({exc}); "
                          "pass fold_bn=False") from exc
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        bn = modules[node.target]
        if (
            not isinstance(src, torch.fx.Node)
            or src.op != "call_module"
            or not isinstance(modules[src.target], nn.Conv2d)
            or len(src.users) != 1
            or calls[src.target] != 1
            or calls[node.target] != 1
            or bn.running_mean is None
        ):
            continue
        _fold_conv_bn_(modules[src.target], bn)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


# ----------------------------------------------------------------------------- checks


def output_difference(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """How far ``out`` is from ``ref``: ``max_rel_diff`` (max |out - ref| / max |ref|) and
    ``same_top1`` (every row has the same argmax)."""
    out, ref = out.float(), ref.float()
    rel = (out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)
    return {"max_rel_diff": float(rel), "same_top1": bool((out.argmax(1) == ref.argmax(1)).all())}


def _batches(data: Data, what: str) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``data`` as a list of (inputs, targets-or-None) batches."""
    if isinstance(data, torch.Tensor):
        return [(data, None)]
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return [(data[0], data[1])]
    out = []
    for item in data:
        if isinstance(item, torch.Tensor):
            out.append((item, None))
        elif isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], torch.Tensor):
            out.append((item[0], item[1] if len(item) > 1 else None))
        else:
            raise ConfigError(f"{what}: expected tensors or (inputs, targets) batches, got {type(item).__name__}")
    if not out:
        raise ConfigError(f"{what} is empty")
    for x, _ in out:
        if x.dim() != 4 or not x.is_floating_point():
            raise ConfigError(f"{what}: inputs must be float (N, C, H, W) tensors, got {tuple(x.shape)} {x.dtype}")
    return out


@torch.no_grad()
def _accuracy_change(
    fp32: Callable[[torch.Tensor], torch.Tensor],
    ours: Callable[[torch.Tensor], torch.Tensor],
    data: list[tuple[torch.Tensor, Optional[torch.Tensor]]],
) -> dict[str, Any]:
    """Top-1 agreement of ``ours`` with ``fp32`` and, where targets are given, both accuracies."""
    n = agree = n_labelled = right_fp32 = right_ours = 0
    for x, y in data:
        a, b = fp32(x).argmax(1), ours(x).argmax(1)
        n += len(x)
        agree += int((a == b).sum())
        if y is not None:
            n_labelled += len(y)
            right_fp32 += int((a == y).sum())
            right_ours += int((b == y).sum())
    report: dict[str, Any] = {"n": n, "top1_agreement": agree / n}
    if n_labelled:
        report.update(
            n_labelled=n_labelled,
            top1_acc_fp32=right_fp32 / n_labelled,
            top1_acc=right_ours / n_labelled,
            top1_delta=(right_ours - right_fp32) / n_labelled,
        )
    return report


# ----------------------------------------------------------------------------- ONNX Runtime


def _onnxruntime() -> Any:
    try:
        import onnxruntime  # optional: the onnx extra
    except ImportError:
        raise ConfigError(
            "INT8 and the ONNX Runtime path need the onnx extra: pip install 'resnetlab[onnx]'"
        ) from None
    return onnxruntime


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over our batches."""

    def __init__(self, batches: list[tuple[torch.Tensor, Optional[torch.Tensor]]]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        item = next(self._it, None)
        return None if item is None else {"input": item[0].float().contiguous().numpy()}


def _ort_session(model_bytes: bytes, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {"input": x.detach().float().contiguous().cpu().numpy()})
        return torch.from_numpy(logits)

    return run


def _onnxruntime_model(
    model: nn.Module, example: torch.Tensor, calibration: Optional[list], quantize: Optional[str]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """ONNX Runtime session of ``model``: fp32, or int8 calibrated on ``calibration``."""
    _onnxruntime()
    with tempfile.TemporaryDirectory(prefix="resnetlab-onnx-") as tmp:
        fp32_path = os.path.join(tmp, "fp32.onnx")
        to_onnx(model, example, fp32_path)
        path = fp32_path
        if quantize == "int8":
            # optional, as above: ONNX Runtime's quantizer
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process  # optional, as above

            pre_path = os.path.join(tmp, "pre.onnx")
            quant_pre_process(fp32_path, pre_path, skip_symbolic_shape=True)
            path = os.path.join(tmp, "int8.onnx")
            # reduce_range: 7-bit weights.  x86 CPUs without VNNI multiply u8 x s8 with
            # VPMADDUBSW, whose int16 pair sums saturate at full range: on the akamaster
            # ResNet-20 that cost 1.4 points of CIFAR top-1, 7-bit weights cost none.
            quantize_static(
                pre_path, path, _Calibration(calibration),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        with open(path, "rb") as f:
            model_bytes = f.read()
    return _ort_session(model_bytes, torch.get_num_threads())


# ----------------------------------------------------------------------------- optimize


def _torch_runtime(
    reference: nn.Module, fold_bn: bool, channels_last: bool, compile: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[str]]:
    """The PyTorch path of :func:`optimize`: ``(run, steps applied)``."""
    steps = []
    net: nn.Module = reference
    if fold_bn:
        net = fold_batchnorm(net)
        steps.append("fold batchnorm")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net = net.to(memory_format=memory_format)
        steps.append("channels_last")
    if compile:
        # Freezing turns weights into constants so inductor can pre-pack them and fuse
        # conv + bias + ReLU (+ residual add); it applies to inference only.
        net = torch.compile(net, options={"freezing": True})
        steps.append("torch.compile (inductor, freezing)")

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x.contiguous(memory_format=memory_format))

    return run, steps


def _fastest(candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
             rounds: int = 3, min_time: float = 0.3) -> tuple[str, dict[str, float]]:
    """The name of the fastest of ``candidates`` on ``x`` (the best of ``rounds`` interleaved
    timings each, order alternating) and every candidate's images/s."""
    best = {name: 0.0 for name in candidates}
    for r in range(rounds):
        for name in (list(candidates) if r % 2 == 0 else list(candidates)[::-1]):
            run = candidates[name]
            best[name] = max(best[name], len(x) * calls_per_second(lambda: run(x), x.device, min_time, min_calls=2))
    return max(best, key=best.__getitem__), {name: round(v, 2) for name, v in best.items()}


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def optimize(
    model: nn.Module,
    example: torch.Tensor,
    *,
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
    runtime: Literal["torch", "onnxruntime", "auto"] = "torch",
    quantize: Optional[Literal["int8"]] = None,
    calibration: Optional[Data] = None,
    validation: Optional[Data] = None,
) -> OptimizedModel:
    """A fast inference callable for ``model`` (which is left unchanged).

    Args:
        model: a trained model; it is copied and put in eval mode.
        example: a batch of normalized inputs (N, C, H, W) on the target device; used to
            trace, compile and check that the optimized model gives the same outputs.
        channels_last: run convolutions in NHWC memory layout (torch runtime).
        fold_bn: fold every BatchNorm into the convolution before it (:func:`fold_batchnorm`).
        compile: ``torch.compile`` with inductor freezing; costs about a minute for a
            ResNet-50 on 2 CPU cores, paid here, once per batch size.
        runtime: ``"torch"``, ``"onnxruntime"`` (CPU; the ``onnx`` extra) or ``"auto"``:
            build every runtime this device has, time them on ``example`` (interleaved)
            and keep the fastest; ``report["candidates_img_s"]`` holds the timings.
        quantize: ``None`` (fp32) or ``"int8"`` (ONNX Runtime static quantization; CPU).
        calibration: data whose activation ranges set the int8 scales (a few hundred
            images of the kind the model will see); inputs, ``(inputs, targets)`` or an
            iterable of batches.  Required for ``"int8"``.
        validation: labelled data (``(inputs, targets)`` or batches of them) on which the
            int8 accuracy change is measured; without it only the top-1 agreement with the
            fp32 model on ``calibration`` is reported.

    Returns:
        An :class:`OptimizedModel`; ``.report`` says what was done and how close it is.
    """
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize={quantize!r} is not one of None, 'int8'")
    if runtime not in ("torch", "onnxruntime", "auto"):
        raise ConfigError(f"runtime={runtime!r} is not one of 'torch', 'onnxruntime', 'auto'")
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or not example.is_floating_point():
        raise ConfigError("example must be a float (N, C, H, W) tensor of normalized inputs")
    device = example.device
    reference = copy.deepcopy(model).eval().to(device)
    with torch.no_grad():
        expected = reference(example)
    start = time.perf_counter()

    if quantize == "int8" or runtime == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError("the ONNX Runtime and INT8 paths run on CPU; pass a CPU example")
        if quantize == "int8" and calibration is None:
            raise ConfigError("quantize='int8' needs calibration data (inputs like the ones it will see)")
        names = ["onnxruntime"]
    elif runtime == "auto" and device.type == "cpu" and _has_onnxruntime():
        names = ["torch", "onnxruntime"]
    else:
        names = ["torch"]
    calib = _batches(calibration, "calibration") if quantize == "int8" else None
    built: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[str]]] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "torch":
            built[name] = _torch_runtime(reference, fold_bn, channels_last, compile)
        else:
            steps = ["onnx export", "onnxruntime graph optimisation (BN folding, conv fusion)"]
            if quantize == "int8":
                steps.append("int8 static quantization (per-channel 7-bit weights, MinMax calibration)")
            built[name] = (_onnxruntime_model(reference, example, calib, quantize), steps)
        outputs[name] = built[name][0](example)  # the first call also compiles
    report: dict[str, Any] = {"quantize": quantize, "device": str(device)}
    if len(built) > 1:
        chosen, report["candidates_img_s"] = _fastest({name: run for name, (run, _) in built.items()}, example)
    else:
        chosen = names[0]
    run, report["steps"] = built[chosen]
    report["runtime"] = chosen
    if quantize == "int8":
        report["calibration_images"] = sum(len(x) for x, _ in calib)

    report["setup_s"] = round(time.perf_counter() - start, 3)
    report.update(output_difference(outputs[chosen], expected))
    if quantize == "int8":
        checked = _batches(validation, "validation") if validation is not None else calib
        with torch.no_grad():
            report["accuracy"] = _accuracy_change(reference, run, checked)
    return OptimizedModel(run, report)
