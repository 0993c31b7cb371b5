"""The code's shape, as issue 12 set it: short functions, one-way imports (inference never reaches
into training, no cycles), and options that are dataclass fields, so a new field is a new option."""

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from unetkit.cli import build_parser
from unetkit.cli.arguments import add_dataclass_arguments
from unetkit.inference import InferenceOptions
from unetkit.runtime.options import option, whole
from unetkit.train.config import TrainConfig

PACKAGE = Path(__file__).resolve().parents[1] / "unetkit"
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    trees = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text(), str(path))
    return trees


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The unetkit modules a module imports (`from unetkit.x import y` counts x.y when y is a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unetkit"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & known


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


def test_inference_imports_nothing_from_training_and_there_is_no_cycle():
    trees = modules()
    graph = {name: imports(tree, set(trees)) - {name} for name, tree in trees.items()}
    inference = {name: deps for name, deps in graph.items() if name.startswith("unetkit.inference")}
    assert not {name: deps for name, deps in inference.items() if any(d.startswith("unetkit.train") for d in deps)}
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        visiting.append(name)
        for dep in graph[name]:
            if dep in visiting:
                cycles.append(visiting[visiting.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep)
        visiting.pop()
        done.add(name)

    for name in graph:
        if name not in done:
            visit(name)
    assert not cycles


def package_of(module: str) -> str:
    """unetkit.train.loop -> train; a top-level module is its own package (unetkit.scoring.metrics -> metrics)."""
    return module.split(".")[1] if module.count(".") else "unetkit"


def test_packages_import_one_way():
    """Packages, not only modules: no cycle between them, training and inference never import each
    other, and neither imports the report or the run layer that calls them in order (unetkit/runs)."""
    trees = modules()
    edges = {
        (package_of(name), package_of(dep))
        for name, tree in trees.items()
        for dep in imports(tree, set(trees))
        if package_of(name) != package_of(dep) and package_of(name) != "unetkit"
    }
    for below in ("train", "inference"):
        assert not {(a, b) for a, b in edges if a == below and b in {"train", "inference", "report", "runs"}}
    packages = {a for a, _ in edges} | {b for _, b in edges}
    reaches = {p: {b for a, b in edges if a == p} for p in packages}
    for _ in packages:  # the transitive closure
        reaches = {p: found | {c for b in found for c in reaches.get(b, ())} for p, found in reaches.items()}
    assert not [p for p in packages if p in reaches[p]], edges


@pytest.mark.parametrize(("command", "options"), [("train", TrainConfig), ("predict", InferenceOptions)])
def test_every_field_is_an_option(command, options):
    parser = build_parser()
    subparser = parser._subparsers._group_actions[0].choices[command]
    destinations = {action.dest for action in subparser._actions}
    assert {field.name for field in dataclasses.fields(options)} <= destinations


def test_a_new_field_is_a_new_checked_option():
    @dataclasses.dataclass
    class Options:
        border_width: int = option(3, "pixels", group="data", valid=whole(1, 9), need="1 to 9 pixels")

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Options)
    assert parser.parse_args(["--border-width", "5"]).border_width == 5
    assert parser.parse_args([]).border_width is None  # not typed: the dataclass's default applies
    assert "(default 3)" in parser.format_help()


def test_the_refusal_batteries_live_by_room_and_hold_at_least_240_cases():
    """Issue 34: each case beside the tests of the room whose refusal it checks, one shared harness
    (tests/refusals.py); issue 33: at least 240 cases over them."""
    import importlib.util

    tests = Path(__file__).parent
    assert not list(tests.glob("test_bad_input*.py"))
    total = 0
    for path in sorted(tests.glob("*/test_*_refusals.py")):
        spec = importlib.util.spec_from_file_location(f"count_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        total += len(module.CASES)
    assert total >= 240, total


def test_the_readmes_table_names_every_module():
    """Issue 34: "where the ideas live" names every module of the package (a row's later files
    may be bare names in the folder of the first)."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Where the ideas live") :]
    table = table[: table.index("\n## ", 5)]
    named = set()
    for row in (line for line in table.splitlines() if line.startswith("| ")):
        folder = None
        for name in (part.strip() for cell in re.findall(r"`([^`]+)`", row.split("|")[-2]) for part in cell.split(",")):
            if name.startswith("unetkit/"):
                folder, _ = name.rsplit("/", 1)
                named.add(name)
            elif folder and name.endswith(".py"):
                named.add(f"{folder}/{name}")
    modules = {str(p.relative_to(root)) for p in (root / "unetkit").rglob("*.py") if not p.name.startswith("__")}
    assert not sorted(modules - named)


def test_nothing_outside_the_plugin_imports_napari_or_qt():
    from pathlib import Path

    import unetkit

    root = Path(unetkit.__file__).parent
    gui = ("import napari", "from napari", "import qtpy", "from qtpy", "import PyQt5", "from PyQt5")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.relative_to(root).parts[0] != "napari" and any(line in path.read_text() for line in gui)
    ]
    assert not offenders
