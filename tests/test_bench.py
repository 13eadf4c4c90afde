"""bench: the interleaved timer and the `resnetlab bench` JSON line (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnetlab import ConfigError
from resnetlab.bench import compare, format_table
from resnetlab.cli import main

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
    assert "speedup" in format_table(out)


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


def test_bench_train_rejects_infer_options_and_bad_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--model", "cifar_resnet20", "--quantize", "int8"]) == 2
    assert main(["bench", "train", "no_such_key=1", "--model", "cifar_resnet20"]) == 2
    assert main(["bench", "infer", "compile=true", "--model", "cifar_resnet20"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3
