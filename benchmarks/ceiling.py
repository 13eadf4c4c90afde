"""The most any implementation can reach on this machine: dense GEMM ceilings and what they allow.

Measures the fp32 matmul ceiling (PyTorch, the current threads) and, with the onnx extra,
the u8 x s8 integer matmul ceiling of ONNX Runtime's CPU kernels (the ones its INT8
convolutions use), then turns them into the best possible images/s of a model: conv and fc
multiply-adds x 2 per image (x 3 more for a training step) at 100 % of the ceiling. A
target above that bound cannot be met by any software on this CPU.

    .venv/bin/python benchmarks/ceiling.py [--model resnet50] [--threads 2] [--baseline-img-s 10]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from resnetlab.analysis.complexity import complexity
from resnetlab.bench import calls_per_second, cpu_threads, environment, gemm_peak_flops
from resnetlab.registry import create_model, model_info


def int8_gemm_peak_ops(threads: int, n: int = 2048, min_time: float = 0.5) -> float | None:
    """ONNX Runtime's MatMulInteger (uint8 x int8 -> int32) throughput in ops/s, or None
    without onnxruntime."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
        options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8), "B": rng.integers(-64, 64, (n, n), dtype=np.int8)}
    session.run(None, feed)
    cpu = torch.device("cpu")
    return 2 * n**3 * max(calls_per_second(lambda: session.run(None, feed), cpu, min_time) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--baseline-img-s", type=float, default=None,
                        help="a measured eager fp32 rate: the bounds are then also given as speedups over it")
    args = parser.parse_args()
    info = model_info(args.model)
    macs = complexity(create_model(args.model), info.input_size)["macs"]
    with cpu_threads(args.threads):
        fp32 = gemm_peak_flops(torch.device("cpu"))
        int8 = int8_gemm_peak_ops(args.threads)
    out = {
        "model": args.model, "macs_per_image": macs, "threads": args.threads,
        "fp32_gemm_gflops": round(fp32 / 1e9, 1),
        "int8_gemm_gops": None if int8 is None else round(int8 / 1e9, 1),
        "max_infer_img_s_fp32": round(fp32 / (2 * macs), 2),
        "max_infer_img_s_int8": None if int8 is None else round(int8 / (2 * macs), 2),
        "max_train_img_s_fp32": round(fp32 / (6 * macs), 2),
    }
    if args.baseline_img_s:
        for key in [k for k in out if k.startswith("max_") and out[k] is not None]:
            out[key.replace("max_", "max_speedup_").replace("_img_s", "")] = round(out[key] / args.baseline_img_s, 2)
    out.update(environment(torch.device("cpu")))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
