"""The ``resnetlab`` command line: parses arguments, calls the library, prints.

No logic lives here. Every user mistake surfaces as a :class:`ResnetlabError` and ends as
one line on stderr with exit code 2; bugs keep their traceback.

The parsers are plain data (:mod:`resnetlab.arguments`): ``resnetlab --help`` imports no torch.
A command reaches the library as attributes of the package (``resnetlab.evaluate.run_eval``),
which load on first use (:mod:`resnetlab.lazy`): each command loads what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Callable, Sequence

import resnetlab

from . import __version__
from .arguments import LibraryNames, add_run_options, parse
from .config import parse_overrides
from .detection.cli import add_detect
from .errors import ConfigError, DataError, ResnetlabError
from .recipes import RECIPES

# Each subcommand is a pair: add_<name>(subparsers) builds its parser and sets func=<handler>.
_COMMANDS: list[Callable[[Any], None]] = []


def command(add: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a subcommand's parser builder (keeps the order of `resnetlab --help`)."""
    _COMMANDS.append(add)
    return add


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


# ----------------------------------------------------------------------------- list / info


@command
def add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'cifar_*'")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> None:
    names = resnetlab.registry.list_models(args.pattern)
    if args.json:
        _print_json(names)
        return
    for name in names:
        info = resnetlab.registry.model_info(name)
        print(f"{name:24s} {info.family:14s} {info.paper}")


@command
def add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="params, multiply-adds and layers of one model")
    p.add_argument("model")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model arguments, e.g. variant=v1.5")
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> None:
    info = resnetlab.analysis.complexity.describe(args.model, args.overrides, args.input_size)
    if args.json:
        _print_json(info)
        return
    for key, value in info.items():
        if key == "layers":
            print("layers:")
            for line in value:
                print(f"  {line}")
        else:
            print(f"{key}: {value}")


# ----------------------------------------------------------------------------- train


@command
def add_train(sub: Any) -> None:
    p = sub.add_parser("train", help=f"train a recipe ({', '.join(RECIPES)})")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe fields, e.g. model=cifar_resnet56 lr=0.05")
    p.add_argument("--data", default=None, help="digits, cifar10=PATH, cifar100=PATH, imagenet=PATH, folder=PATH, synthetic")
    p.add_argument("--out", default=None, help="run folder (default runs/RECIPE)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (its config.json gives recipe settings and data)")
    add_run_options(p, as_overrides=True)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    result = resnetlab.train.train_recipe(args.recipe, args.overrides, data=args.data, out_dir=args.out,
                                          resume=args.resume)
    if result.interrupted:
        print(f"resnetlab: stopped at step {result.step}/{result.iterations}; checkpoint saved. "
              f"Continue with: resnetlab train {args.recipe} --out {result.out_dir} --resume", file=sys.stderr)
        sys.exit(130)
    val = "n/a" if result.val_err is None else f"{100 * result.val_err:.2f} %"
    print(f"run folder: {result.out_dir}")
    print(f"weights: {result.weights}")
    print(f"steps: {result.step}, validation error: {val}, wall time: {result.seconds:.0f} s")
    if result.skipped_images:
        print(f"skipped {result.skipped_images} unreadable image{'s' if result.skipped_images > 1 else ''} "
              f"(each named in {result.out_dir / 'metrics.jsonl'})")


# ----------------------------------------------------------------------------- reproduce / report


@command
def add_reproduce(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="re-run one of the paper's experiments (tables, figures)")
    p.add_argument("experiment", metavar="EXPERIMENT", choices=LibraryNames("resnetlab.reproduce", "EXPERIMENTS"),
                   help="one of: %(choices)s")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="shorten or adjust: iterations=2000 depths=[20,56] seeds=[0,1] train_subset=5000 device=cuda")
    p.add_argument("--data", default=None, help="NAME=PATH, e.g. cifar10=/data/cifar10 (digits for a smoke run)")
    p.add_argument("--out", default=None, help="output root (default runs/reproduce)")
    add_run_options(p, as_overrides=True)
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> None:
    folder = resnetlab.reproduce.run_experiment(args.experiment, args.overrides, data=args.data, out=args.out)
    print((folder / "table.md").read_text(), end="")
    print(f"written: {folder}")


@command
def add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="write results/REPORT.md from the experiments under a reproduce root")
    p.add_argument("--out", default=None, help="the reproduce root to read (default runs/reproduce)")
    p.add_argument("--results", default="results", help="where REPORT.md, its PNGs and our weights go")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> None:
    print(f"written: {resnetlab.report.write_report(args.out, args.results)}")


# ----------------------------------------------------------------------------- eval / import / export / predict


@command
def add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a weights file (or a model name, random weights) on a data set; "
                       "several: their ensemble (softmax averaged over views, then models)")
    p.add_argument("target", nargs="+", metavar="MODEL_OR_WEIGHTS")
    p.add_argument("--data", required=True, help="digits, cifar10=PATH, cifar100=PATH, imagenet=PATH, folder=PATH")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--protocol", metavar="P", choices=LibraryNames("resnetlab.evaluate", "PROTOCOLS"), default=None,
                   help="%(choices)s (default: full for CIFAR-size models, center otherwise)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=None, help="folder for per_class.json and confusion.png")
    p.add_argument("--data-classes-only", action="store_true",
                   help="answer only among the data set's classes (ImageNet-A/R's protocol for their 200 of "
                        "ImageNet's 1,000); default: any of the model's outputs")
    add_run_options(p)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> None:
    result = resnetlab.evaluate.run_eval(args.target, args.data, split=args.split, protocol=args.protocol,
                                         batch_size=args.batch_size, device=args.device or "auto", out_dir=args.out,
                                         threads=args.threads or 0, data_classes_only=args.data_classes_only)
    if not args.json:
        print(f"{result['model']} on {result['dataset']}/{result['split']} ({result['protocol']}): "
              f"top-1 error {100 * result['top1_err']:.2f} %, top-5 error {100 * result['top5_err']:.2f} % "
              f"({result['correct']}/{result['n']} correct"
              f"{', answers among its ' + str(result['answers_among']) + ' classes' if args.data_classes_only else ''})")
    _print_json(result)


@command
def add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="convert a foreign checkpoint into a resnetlab weights file")
    p.add_argument("source", metavar="SOURCE", choices=LibraryNames("resnetlab.importers", "IMPORTERS"),
                   help="one of: %(choices)s")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True, metavar="OUT.safetensors")
    p.add_argument("--model", default=None, help="target model (default: detected from the checkpoint)")
    p.add_argument("--mean", default=None, metavar="MEAN.binaryproto",
                   help="caffe: the per-pixel mean file (default: ResNet_mean.binaryproto beside FILE)")
    p.add_argument("--prefix", default=None, metavar="P",
                   help="import only the tensors whose keys start with P, without it (e.g. 'model.' of a "
                        "checkpoint that also holds an EMA copy or a loss with weights)")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> None:
    meta = resnetlab.importers.import_weights(args.source, args.file, args.out, model=args.model, mean_file=args.mean,
                                              prefix=args.prefix)
    print(f"{args.out}: {meta.model} {meta.kwargs}, {len(meta.classes)} classes, input {list(meta.input_size)}, "
          f"source {meta.source}")


@command
def add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="export a weights file to ONNX, TorchScript or a model-hub folder")
    p.add_argument("weights")
    p.add_argument("--format", metavar="FORMAT", choices=LibraryNames("resnetlab.export", "FORMATS"), required=True,
                   help="%(choices)s")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    result = resnetlab.export.export(args.weights, args.format, args.out)
    diff = result["max_abs_diff"]
    check = "not checked (install onnxruntime)" if diff is None else f"max |diff| vs PyTorch {diff:.2e}"
    print(f"{result['out']}: {result['model']} as {result['format']}, {check}")


@command
def add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="top-5 classes of images under a weights file")
    p.add_argument("weights")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=5, help="classes shown per image")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    add_run_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    results = resnetlab.predict.predict(args.weights, args.images, top_k=args.top, device=args.device or "auto")
    if args.json:
        _print_json(results)
    else:
        for result in (r for r in results if "top" in r):
            print(result["image"])
            for rank, hit in enumerate(result["top"], 1):
                print(f"  {rank}. {100 * hit['prob']:6.2f} %  {hit['class']}")
    failed = [result["error"] for result in results if "error" in result]
    for error in failed[:-1]:
        print(f"resnetlab: error: {error}", file=sys.stderr)
    if failed:
        raise DataError(f"{failed[-1]}" + (f" ({len(failed)} of {len(results)} images could not be read)"
                                            if len(failed) > 1 else ""))


# ----------------------------------------------------------------------------- bench


@command
def add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="ours vs a baseline, interleaved in one process: images/s, memory")
    p.add_argument("kind", choices=["train", "infer"],
                   help="train: the engine's step vs an eager NCHW loop; infer: optimize() vs eager fp32 NCHW")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="train: recipe overrides, right after 'train', e.g. compile=true")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 for train, 16 for infer")
    p.add_argument("--device", default="cpu", help="cpu (the default), auto, cuda, cuda:N or mps")
    p.add_argument("--recipe", default="paper_cifar", help="train: the recipe whose step is timed")
    p.add_argument("--input-size", type=int, default=None, help="infer: square input side (default: the model's)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each before timing")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per contender per round")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of both (default: chosen as every command does)")
    p.add_argument("--compile", action="store_true", help="infer: torch.compile with freezing")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "auto"], default="torch",
                   help="infer: fp32 runtime (auto: time those this machine has, keep the fastest)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="infer: int8 via ONNX Runtime")
    p.add_argument("--out", default=None, help="also append the result to OUT/bench.jsonl")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> None:
    timing = dict(device=args.device, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                  threads=args.threads)
    if args.batch_size is not None:
        timing["batch_size"] = args.batch_size
    if args.kind == "train":
        if args.compile or args.runtime != "torch" or args.quantize or args.input_size:
            raise ConfigError("bench train: use key=value recipe overrides (e.g. compile=true), "
                              "not --compile/--runtime/--quantize/--input-size")
        result = resnetlab.bench.bench_train(args.model, recipe=args.recipe, overrides=parse_overrides(args.overrides),
                                             **timing)
    else:
        if args.overrides:
            raise ConfigError(f"bench infer takes no key=value overrides, got {' '.join(args.overrides)}")
        result = resnetlab.bench.bench_infer(args.model, input_size=args.input_size, compile=args.compile,
                                             runtime=args.runtime, quantize=args.quantize, **timing)
    if args.out:
        resnetlab.bench.record(args.out, result)
    if args.json:
        _print_json(result)
    else:
        print(resnetlab.bench.format_table(result))


command(add_detect)  # resnetlab detect train|eval|predict|export: detection/cli.py


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The full ``resnetlab`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="resnetlab",
        description="Deep residual networks (He et al. 2015): models, training, evaluation, reproduction.",
    )
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; options and ``key=value`` words may come in any order after the
    command, sub-commands nested or not (see :func:`resnetlab.arguments.parse`)."""
    return parse(build_parser(), sys.argv[1:] if argv is None else argv)


def _threads(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """A command that runs networks sets its CPU threads for its run, the one way every command
    does (``--threads N``, ``threads=N``, else :func:`resnetlab.machine.choose_threads`'s automatic
    choice); the library says what was chosen once the work starts."""
    if "threads" not in args:
        return contextlib.nullcontext()
    requested = args.threads
    if requested is None and "overrides" in args:
        requested = parse_overrides(args.overrides).get("threads")
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool)):
        raise ConfigError(f"threads: expected a whole number, got {requested!r}")
    return resnetlab.machine.chosen_threads(requested or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a command line argparse refuses)."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse's error (it has printed the usage and the message) or --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with _threads(args):
            args.func(args)
    except ResnetlabError as exc:
        print(f"resnetlab: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"resnetlab: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnetlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
