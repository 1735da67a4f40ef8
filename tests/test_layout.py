"""The package's shape: no import cycles, dependencies that point one way, small modules, parameters defined once.

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
    "infra": 2, "paramspec": 2,
    # the system under test
    "db": 3, "jobs": 3, "cache": 4,
    "psra": 5,
    "api": 6,
    # the workbench above it: nothing of the system under test may import a measurement
    "measure": 7,
    "workbench": 8, "latency": 9, "cachesim": 9, "load": 9, "trace": 9, "workload": 10,
    "params": 10,
    "report": 11, "doctor": 11,
    "cli": 12, "__main__": 13, "__init__": 0,
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


# ----------------------------------------------------------------------------- module size

#: Split a module by concern before it passes this many lines (docs/STYLE: rq's 2,000-line modules).
MAX_MODULE_LINES = 600


#: Modules already over the limit when the test came, with their size then: they may shrink, never grow.
@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_module_name(path)} has {lines} lines (at most {MAX_MODULE_LINES}): split it"


# ----------------------------------------------------------------------------- parameters defined once


def _model_fields() -> set[str]:
    """Every field name of the experiments' parameter models."""
    from psra_bench.params import NOTEBOOK_PARAMS
    from psra_bench.report.runner import ReportParams
    from psra_bench.workbench import SeedParams

    names: set[str] = set(ReportParams.model_fields) | set(SeedParams.model_fields)
    for model in NOTEBOOK_PARAMS.values():
        names |= set(model.model_fields)
    return names


def _literal_defaults(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every non-None literal default of a click option or of an experiment entry point.

    A click option's name is its explicit destination or its first flag without dashes; an entry point is a
    function ``run_*`` or ``check_*`` in an experiment module. None is allowed: it means "the model's value".
    """
    found: list[tuple[int, str]] = []

    def literal(node: ast.expr | None) -> bool:
        if node is None or (isinstance(node, ast.Constant) and node.value is None):
            return False
        try:
            ast.literal_eval(node)
        except ValueError:
            return False
        return True

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "option":
            texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            dests = [t for t in texts if not t.startswith("-")]
            name = dests[0] if dests else (texts[0].split("/")[0].lstrip("-").replace("-", "_") if texts else "")
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if literal(default):
                found.append((node.lineno, name))
        elif isinstance(node, ast.FunctionDef) and node.name.startswith(("run_", "check_")):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            found += [(d.lineno, a.arg) for a, d in pairs if literal(d)]
    return sorted(found)


#: Where a parameter of an experiment could be given a default of its own.
ENTRY_MODULES = sorted((PACKAGE / "cli").glob("*.py")) + [
    PACKAGE / "latency" / "experiment.py",
    PACKAGE / "cachesim" / "experiment.py",
    PACKAGE / "load" / "experiment.py",
    PACKAGE / "report" / "runner.py",
]


@pytest.mark.parametrize("path", ENTRY_MODULES, ids=lambda p: _module_name(p))
def test_a_parameter_default_is_written_only_in_its_model(path: Path) -> None:
    fields = _model_fields()
    written = [f"line {line}: {name}" for line, name in _literal_defaults(path) if name in fields]
    assert not written, (
        f"{_module_name(path)} writes defaults of model parameters {written}: take them from the model "
        "(a preset, psra_bench.cli.options.model_option) instead"
    )


def test_the_scan_sees_a_written_default(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "import click\n"
        "@click.option('--iterations', type=int, default=10)\n"
        "@click.option('--budget', 'budget_s', default=5.0)\n"
        "@click.option('--out', default=None)\n"
        "def audit(iterations, budget_s, out): ...\n"
        "def run_it(settings, *, rounds=2, dataset=None): ...\n"
    )
    assert [name for _, name in _literal_defaults(source)] == ["iterations", "budget_s", "rounds"]
