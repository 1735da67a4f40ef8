"""The package's shape: no import cycles, and dependencies that point one way.

The system under test sits in layers (api -> psra -> jobs/cache/db -> infra -> settings); the
workbench (measure, latency, cachesim, load, report) sits above it, and the CLI above everything.
Each module's imports are read from its source (every ``import`` statement, including those inside
functions, except ``if TYPE_CHECKING:`` blocks), so a new arrow that runs back up fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "psra_bench"

#: Rank of each top-level part: a module may import parts of a lower rank, or its own part.
RANKS: dict[str, int] = {
    "constants": 0, "exceptions": 0, "resources": 1, "table": 1, "results": 1, "settings": 1,
    "infra": 2, "measure": 3,
    "db": 3, "jobs": 3, "cache": 4,
    "psra": 5,
    "api": 6,
    "workbench": 7, "latency": 8, "cachesim": 8, "load": 8,
    "params": 9,
    "report": 10, "doctor": 10,
    "cli": 11, "__main__": 12, "__init__": 0,
}  # fmt: skip

#: The generic job queue knows nothing of the PSRA domain, the data layer or the cache (like arq).
JOBS_MAY_IMPORT = {"constants", "exceptions", "settings", "infra", "jobs"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The psra_bench modules that ``path`` imports (resolved to module names)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], depth: int) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("psra_bench"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("psra_bench"):
                    for alias in node.names:  # `from pkg import mod` names a module when one exists
                        sub = f"{base}.{alias.name}"
                        found.add(sub if _exists(sub) else base)
            if (
                top_level_only
                and depth == 0
                and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            ):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list) and children and isinstance(children[0], ast.stmt | ast.excepthandler):
                    visit(children, depth + 1)  # type: ignore[arg-type]

    visit(ast.parse(path.read_text()).body, 0)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_rank() -> None:
    parts = {_part(_module_name(p)) for p in MODULES}
    assert parts <= set(RANKS), f"give these a rank in RANKS: {sorted(parts - set(RANKS))}"


def test_no_import_cycles() -> None:
    graph = {_module_name(p): _imports(p, top_level_only=False) for p in MODULES}
    # a subpackage's face imports its own modules; those importing the face back would be a cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path: Path) -> None:
    module = _module_name(path)
    mine = _part(module)
    wrong = []
    for dep in sorted(_imports(path, top_level_only=False)):
        theirs = _part(dep)
        if theirs == mine or mine == "__init__":
            continue
        if RANKS[theirs] >= RANKS[mine]:
            wrong.append(f"{dep} (rank {RANKS[theirs]} >= {RANKS[mine]})")
        elif mine == "jobs" and theirs not in JOBS_MAY_IMPORT:
            wrong.append(f"{dep} (the generic queue may use only {sorted(JOBS_MAY_IMPORT)})")
    assert not wrong, f"{module} imports upward or sideways: {wrong}"


FACES = sorted(p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("face", FACES, ids=lambda p: p.parent.name)
def test_each_subpackage_face_exports_what_it_lists_and_only_its_own(face: Path) -> None:
    import importlib

    name = _module_name(face)
    module = importlib.import_module(name)
    listed = list(module.__all__)
    assert listed and len(listed) == len(set(listed)), f"{name}.__all__ is empty or repeats a name"
    for attr in listed:
        value = getattr(module, attr)  # AttributeError: listed but not there
        origin = getattr(value, "__module__", None)
        if origin is not None and origin.startswith("psra_bench."):
            assert origin.startswith(name + "."), f"{name} re-exports {attr} from {origin}, outside its package"
