"""Imports run one way: the core never imports the applications, and no module imports one of
resnetlab's own modules inside a function (only optional third-party packages may be imported
lazily, each with a comment saying why). The one deferred import of our own modules is by design:
packages load their modules on first use (lazy.py), and the command line reaches the library
through those package attributes, so that ``resnetlab --help`` loads no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"
#: the core: what every application builds on
CORE = ("models", "registry", "weights", "data", "errors", "constants", "files", "config", "paper", "device",
        "machine", "timing")
#: the applications, which the core must never import
APPLICATIONS = ("train", "evaluate", "inference", "bench", "reproduce", "report", "cli", "detection", "predict",
                "export", "hub", "demo", "importers", "tensorboard", "runfolder", "recipes", "docs", "arguments")
#: where a module of ours is imported on first use rather than when its importer loads, and why:
#: package attributes (``resnetlab.create_model``, ``resnetlab.evaluate``) and the choices a command's
#: help lists (``--protocol``), so that ``import resnetlab`` and ``resnetlab --help`` load no torch
DEFERRED = {"lazy.py": "package attributes load on first use",
            "arguments.py": "a command's choices load when checked or shown"}
#: the modules that reach the library as package attributes (``resnetlab.evaluate.run_eval``),
#: loaded when a command runs: the command line's dispatch
DISPATCH = ("cli.py", "detection/cli.py")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> list[tuple[ast.AST, list[str], bool]]:
    """``(node, absolute modules, inside a function)`` of every import in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.append((child, [a.name for a in child.names], in_function))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(path, child)
                names = [f"{base}.{a.name}" if base == "resnetlab" else base for a in child.names]
                found.append((child, names, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def _top(name: str) -> str:
    """``resnetlab.data.images`` -> ``data``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_core_never_imports_an_application() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = _top(_module(path))
        if own not in CORE:
            continue
        for node, names, _ in _imports(path):
            for name in names:
                if name.startswith("resnetlab") and _top(name) in APPLICATIONS:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} imports {name}")
    assert not bad, "\n".join(bad)


def _explained(lines: list[str], index: int) -> bool:
    """A comment on the import's line, or on the lines of the import block it closes (imports
    under one ``try:`` or one comment line share that comment)."""
    i = index
    while i >= 0:
        line = lines[i].strip()
        if "#" in line:
            return True
        if not (line.startswith(("import ", "from ")) or line == "try:"):
            return False
        i -= 1
    return False


def test_no_function_level_imports_of_our_own_modules() -> None:
    bad, unexplained = [], []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node, names, in_function in _imports(path):
            if not in_function:
                continue
            if any(n.startswith("resnetlab") for n in names):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno} imports {', '.join(names)} inside a function")
            elif not _explained(lines, node.lineno - 1):
                unexplained.append(f"{path.relative_to(SRC)}:{node.lineno} lazy import of {', '.join(names)} "
                                   "without a comment saying why")
    assert not bad, "\n".join(bad)
    assert not unexplained, "\n".join(unexplained)


def test_bench_and_inference_do_not_import_each_other() -> None:
    inference = {n for _, names, _ in _imports(SRC / "inference.py") for n in names}
    assert "resnetlab.bench" not in inference


def test_deferred_imports_only_where_the_design_puts_them() -> None:
    """``importlib.import_module`` only in :data:`DEFERRED`; the bare package ``import resnetlab``
    (whose attributes load modules when used) only in the command line's :data:`DISPATCH`."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if "import_module(" in path.read_text() and rel not in DEFERRED:
            bad.append(f"{rel}: importlib.import_module outside {sorted(DEFERRED)}")
        for node, names, _ in _imports(path):
            if isinstance(node, ast.Import) and "resnetlab" in names and rel not in DISPATCH:
                bad.append(f"{rel}:{node.lineno}: `import resnetlab` outside the command line's dispatch {DISPATCH}")
    assert not bad, "\n".join(bad)


HEAVY = ("torch", "torchvision", "matplotlib", "numpy", "PIL", "sklearn", "safetensors")


def _loaded(code: str) -> list[str]:
    """The heavy top-level packages ``code`` leaves in ``sys.modules``, in a fresh interpreter."""
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_and_help_load_no_torch() -> None:
    """``import resnetlab`` and every command's parser (what ``resnetlab --help`` and
    ``resnetlab detect --help`` build) load none of the heavy packages; a command loads what it
    needs when it runs."""
    assert _loaded("import resnetlab") == []
    assert _loaded("from resnetlab.cli import build_parser, parse_args\nbuild_parser()\n"
                   "parse_args(['detect', 'train', 'shapes_demo', '--out', 'o', 'iterations=2'])") == []
    assert "torch" in _loaded("import resnetlab\nresnetlab.create_model('cifar_resnet20')")
