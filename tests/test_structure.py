"""The package's shape: data flows one way (no import circles), one module owns the run folder's
names, and the variant registry needs no TensorFlow. Read from the source with `ast`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from unetq import runfolder
from unetq.variants import VARIANTS

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "unetq"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """unetq modules that `path` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "unetq"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "unetq":
                continue
            for alias in node.names:  # `from unetq.data import fetch` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(import_cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_unetq_modules():
    graph = {name: imports_of(path) - {name} for name, path in MODULES.items()}
    assert len(graph) > 20
    assert "unetq.results" in graph["unetq.bench.run"]  # the graph is really read
    assert import_cycles(graph) == []


RUN_FOLDER_NAMES = (
    runfolder.CONFIG_FILE,
    runfolder.MODEL_FILE,
    runfolder.HISTORY_FILE,
    runfolder.DONE_FILE,
    runfolder.TRAIN_STATE_FILE,
    runfolder.TRAINED_CSV,
    runfolder.COMPRESSED_CSV,
    runfolder.INDIVIDUAL_CSV,
    runfolder.AVERAGE_CSV,
    runfolder.ROBUSTNESS_CSV,
    "dataset.json",
    "machine.json",
    "steps.json",
    "index.html",
    "panel.png",
    "keras_classes",
)
RUN_FOLDER_DIRS = (".train", ".eval", ".bench", ".robustness", "cross", "models", "report")


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.add(id(value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_string_literals_sees_literals_but_not_docstrings(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""doc: model.keras"""\ndef f():\n    """doc"""\n    return "a.csv"\n')
    assert string_literals(path) == [(4, "a.csv")]


def path_parts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of string constants joined into a path with `/`, e.g. `root / "models"`."""
    return [
        (side.lineno, side.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for side in (node.left, node.right)
        if isinstance(side, ast.Constant) and isinstance(side.value, str)
    ]


def test_no_run_folder_name_is_spelled_outside_the_run_folder_module():
    offenders = []
    for name, path in MODULES.items():
        if name == "unetq.runfolder":
            continue
        for line, text in string_literals(path):
            if any(n in text for n in RUN_FOLDER_NAMES):
                offenders.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
        for line, text in path_parts(path):
            if text in RUN_FOLDER_DIRS:
                offenders.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert offenders == []


def test_path_parts_sees_joined_folder_names(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('x = root / "models" / name\ny = "models"\n')
    assert path_parts(path) == [(1, "models")]


def test_every_variant_has_a_converter_and_its_own_artifact(tmp_path):
    names = [runfolder.artifact_path(tmp_path, v).name for v in VARIANTS]
    assert len(set(names)) == len(names)
    for variant in VARIANTS.values():
        assert (variant.convert is None) == variant.original, variant.name


@pytest.mark.parametrize(
    "module",
    ["unetq.variants", "unetq.runfolder", "unetq.results", "unetq.evaluate", "unetq.report.html"],
)
def test_registry_and_result_modules_import_without_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
