"""Imports point down: the engine layers never reach up into the notebook-facing API, and nothing is circular.

Why a test and not a convention: an upward import (``train`` importing ``finetune`` to
build a model) works today and silently turns two modules into one -- neither can be
read, tested or changed alone -- and the cycle it usually closes makes import order
matter. The source is parsed with :mod:`ast` (nothing is imported), so the test is fast
and sees imports inside functions as well.

Decisions:

* **Layer rule** (lower layers must not import notebook-facing modules): every import
  counts, at module level or inside a function. A lazy import still couples the engine
  to the API above it; laziness only hides the cycle until run time.
* **Cycle rule**: the graph has an edge for every import of a ``samlab`` module, module
  level *and* inside functions (for the same reason), at module granularity. An edge to
  a package (``from . import distributed``, ``from .train import x``) points at the
  package's ``__init__``; a package's ``__init__`` re-exporting its own submodules is
  not a cycle it can close with a submodule, so edges from a submodule to its *own*
  package ``__init__`` are dropped (``samlab.train.job`` -> ``samlab.train``), as are
  the package-to-own-submodule edges they would pair with -- Python resolves those
  without executing a circle of other modules.
* ``if TYPE_CHECKING:`` blocks are ignored: they never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "samlab"

#: The modules notebooks import: orchestration and presentation, the top of the stack.
NOTEBOOK_FACING = ("finetune", "finetune_job", "fewshot", "pretraining", "sweep", "zeroshot", "orientation_sensitivity",
                   "volume_prompting", "interactive", "figures", "report", "runner",
                   "cli",
                   "workspace")
#: The engine: models, data, training, metrics, statistics, prompts, I/O.
LOWER = ("train", "pretrain", "models", "data", "metrics", "stats", "prompts", "io")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every ``samlab`` module ``path`` imports (absolute dotted names), at any depth of the file."""
    name = _module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "samlab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "samlab":
                continue
            for alias in node.names:  # `from . import distributed` imports a submodule
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    return {_existing(m) for m in found}


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT.parent / rel.with_suffix(".py")).is_file() or (ROOT.parent / rel / "__init__.py").is_file()


def _existing(module: str) -> str:
    """The longest prefix of ``module`` that is a file in the tree (``samlab.train.loop.train`` -> the module)."""
    parts = module.split(".")
    while parts and not _exists(".".join(parts)):
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        edges = imported_modules(path) - {name}
        # a submodule importing its own package (or an ancestor) gets the already-initialising module: no cycle
        edges = {e for e in edges if not name.startswith(e + ".")}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def _layer(module: str, layers: tuple[str, ...]) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in layers else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        if _layer(module, LOWER) is None:
            continue
        for target in sorted(edges):
            if _layer(target, NOTEBOOK_FACING) is not None:
                bad.append(f"{module} imports {target}")
    return bad


def test_lower_layers_never_import_notebook_facing_modules():
    bad = upward_imports(import_graph())
    assert not bad, "imports pointing up the layers:\n  " + "\n  ".join(bad)


def test_the_samlab_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_train_never_imports_the_api_built_on_it():
    graph = import_graph()
    for module in [m for m in graph if m == "samlab.train" or m.startswith("samlab.train.")]:
        reached = {t.split(".")[1] for t in graph[module] if t.count(".") >= 1}
        assert not reached & {"finetune", "fewshot", "sweep", "figures", "report"}, (module, sorted(graph[module]))


# ------------------------------------------------------------------------- the checks themselves can fail
def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    lazy = "def f():\n    from ..finetune import build_model\n"
    edges = imported_modules(ROOT / "train" / "job.py", lazy)
    assert "samlab.finetune" in edges
    graph = {"samlab.train.job": edges, "samlab.finetune": {"samlab.train.job"}}
    assert upward_imports(graph) == ["samlab.train.job imports samlab.finetune"]
    assert find_cycle(graph) == ["samlab.finetune", "samlab.train.job", "samlab.finetune"]
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..sweep import GridFile\n"
    assert imported_modules(ROOT / "train" / "job.py", typed) == set()


@pytest.mark.parametrize("source, expected", [
    ("from . import distributed as D\n", {"samlab.train.distributed"}),
    ("from .loop import train\n", {"samlab.train.loop"}),
    ("from ..models import load_model\n", {"samlab.models"}),
    ("import samlab.io\n", {"samlab.io"}),
    ("import numpy\n", set()),
])
def test_relative_and_absolute_imports_resolve_to_modules(source, expected):
    assert imported_modules(ROOT / "train" / "job.py", source) == expected
