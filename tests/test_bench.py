"""bench: the interleaved timer and the `resnetlab bench` JSON line (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnetlab import ConfigError
from resnetlab.analysis.complexity import complexity
from resnetlab.bench import _utilisation, compare, format_table, gemm_peak_flops
from resnetlab.cli import main
from resnetlab.registry import create_model

BENCH_KEYS = {"model", "batch_size", "device", "baseline", "baseline_img_s", "img_s", "speedup"}


def test_compare_interleaves_and_counts() -> None:
    calls: list[str] = []
    result = compare(lambda: calls.append("b"), lambda: calls.append("o"), items_per_call=8,
                     device=torch.device("cpu"), repeats=3, warmup=1, min_time=0.0)
    # warm-up b, o; then rounds b o | o b | b o (the order alternates)
    assert calls == ["b", "o", "b", "o", "o", "b", "b", "o"]
    assert result["repeats"] == 3 and result["img_s"] > 0 and result["baseline_img_s"] > 0
    lo, hi = result["speedup_spread"]
    assert lo <= result["speedup"] <= hi
    with pytest.raises(ConfigError):
        compare(lambda: None, lambda: None, items_per_call=1, device=torch.device("cpu"), repeats=0)


def test_bench_infer_cli_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    rc = main(["bench", "infer", "--model", "cifar_resnet20", "--batch-size", "2", "--repeats", "1",
               "--warmup", "0", "--min-time", "0", "--threads", "1", "--json", "--out", str(tmp_path / "run")])
    assert rc == 0 and torch.get_num_threads() == threads  # --threads is restored afterwards
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert BENCH_KEYS <= set(out)
    assert out["model"] == "cifar_resnet20" and out["batch_size"] == 2 and out["device"] == "cpu"
    assert out["same_top1"] and out["max_rel_diff"] < 1e-2 and out["threads"] == 1
    assert json.loads((tmp_path / "run" / "bench.jsonl").read_text()) == out  # the self-describing record
    assert "speedup" in format_table(out) and "MFU" in format_table(out)
    macs = complexity(create_model("cifar_resnet20"), (3, 32, 32))["macs"]
    assert out["flops_per_image"] == 2 * macs and out["peak_dtype"] == "float32"
    assert out["mfu"] > 0 and out["baseline_mfu"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_net"], "unknown model"),
    (["--model", "cifar_resnet20", "--batch-size", "0"], "batch_size"),
    (["--model", "cifar_resnet20", "--device", "cuda:0"] if not torch.cuda.is_available()
     else ["--model", "cifar_resnet20", "--device", "tpu"], "device"),
])
def test_bench_user_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "infer", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_bench_train_cli_json_times_the_engine_step(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "train", "weight_decay=0.0005", "--model", "cifar_resnet20", "--batch-size", "4",
               "--repeats", "1", "--warmup", "0", "--min-time", "0", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert BENCH_KEYS <= set(out)
    assert out["batch_size"] == 4 and "resnetlab.train step" in out["ours"] and out["img_s"] > 0
    # a training step costs forward + two backward products: 3 x 2 x multiply-adds per image
    assert out["flops_per_image"] == 6 * complexity(create_model("cifar_resnet20"), (3, 32, 32))["macs"]
    assert out["mfu"] > 0 and out["baseline_mfu"] > 0


def test_mfu_is_model_flops_over_the_measured_gemm_ceiling() -> None:
    fields = _utilisation({"img_s": 50.0, "baseline_img_s": 25.0}, 2e9, 1e12, "float32")
    assert fields == {"flops_per_image": 2_000_000_000, "peak_tflops": 1.0, "peak_dtype": "float32",
                      "mfu": 0.1, "baseline_mfu": 0.05}
    assert "mfu" not in _utilisation({"img_s": 1.0, "baseline_img_s": 1.0}, 2e9, None, "int8")
    assert gemm_peak_flops(torch.device("cpu"), min_time=0.0) > 1e8  # any CPU does 0.1 GFLOP/s


def test_bench_train_rejects_infer_options_and_bad_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--model", "cifar_resnet20", "--quantize", "int8"]) == 2
    assert main(["bench", "train", "no_such_key=1", "--model", "cifar_resnet20"]) == 2
    assert main(["bench", "infer", "compile=true", "--model", "cifar_resnet20"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3
