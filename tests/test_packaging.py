"""Packaging: environment.yml agrees with pyproject.toml, the public API is declared, imports have
no side effects, and the vendored data is complete and attributed.
"""

from __future__ import annotations

import csv
import importlib
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import psra_bench
from psra_bench.db.reference import hs_rows, hs_sections, rules
from psra_bench.infra import postgres as db

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "psra_bench"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _public_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(psra_bench.__path__) if not m.name.startswith("_"))


# --------------------------------------------------------------------------- environment.yml


def test_environment_yml_python_matches_requires_python() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = _pyproject()["project"]
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and re.fullmatch(r"python\s*[=<>!~].*", d)]
    assert len(pythons) == 1, env["dependencies"]
    version = re.sub(r"^python\s*=+\s*", "", pythons[0]).rstrip(".*")
    assert Version(version) in SpecifierSet(project["requires-python"])
    # The pinned Python is the oldest one the project supports, the one CI and the type checkers target.
    minimum = re.search(r">=\s*([\d.]+)", project["requires-python"])
    assert minimum is not None and Version(version) == Version(minimum.group(1))
    assert _pyproject()["tool"]["mypy"]["python_version"] == version


def test_environment_yml_pip_section_installs_this_package_with_existing_extras() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "pip" in env["dependencies"]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    lines = [ln for ln in pip_sections[0] if re.fullmatch(r"(-e\s+)?\.(\[.*\])?", ln.strip())]
    assert len(lines) == 1, pip_sections[0]
    m = re.fullmatch(r"(?:-e\s+)?\.(?:\[(.*)\])?", lines[0].strip())
    assert m is not None
    extras = {e.strip() for e in (m.group(1) or "").split(",") if e.strip()}
    optional = _pyproject()["project"]["optional-dependencies"]
    assert extras and extras <= set(optional), f"unknown extras {extras - set(optional)}"
    assert "dev" in extras  # the environment runs the tests
    # "." is the folder of environment.yml, which is this project.
    assert _pyproject()["project"]["name"] == "psra-bench"


def test_self_referencing_extras_exist() -> None:
    project = _pyproject()["project"]
    optional = project["optional-dependencies"]
    for name, deps in optional.items():
        for dep in deps:
            m = re.fullmatch(r"psra-bench\[(.*)\]", dep)
            if m:
                assert set(m.group(1).split(",")) <= set(optional), (name, dep)


def test_console_script_points_at_the_cli() -> None:
    assert _pyproject()["project"]["scripts"] == {"psra-bench": "psra_bench.cli:main"}
    from psra_bench.cli import main

    assert callable(main)


# --------------------------------------------------------------------------- public API


def test_version_and_top_level_api() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", psra_bench.__version__)
    import importlib.metadata

    assert importlib.metadata.version("psra-bench") == psra_bench.__version__
    assert "__version__" in psra_bench.__all__
    assert {"PsraBenchError", "Settings", "RedisSettings", "TTLSettings"} <= set(psra_bench.__all__)
    for name in psra_bench.__all__:
        assert hasattr(psra_bench, name), name
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_declares_all(name: str) -> None:
    module = importlib.import_module(f"psra_bench.{name}")
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple) and exported, f"psra_bench.{name} has no __all__"
    assert len(set(exported)) == len(exported), f"duplicates in psra_bench.{name}.__all__"
    for attr in exported:
        assert hasattr(module, attr), f"psra_bench.{name}.__all__ names {attr!r}, which does not exist"


@pytest.mark.parametrize("name", [n for n in _public_modules() if n != "settings"])
def test_only_settings_reads_the_environment(name: str) -> None:
    source = (PACKAGE / f"{name}.py").read_text() if (PACKAGE / f"{name}.py").exists() else ""
    assert not re.search(r"os\.environ|os\.getenv|getenv\(", source), f"psra_bench/{name}.py reads os.environ"


_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import psutil
import psra_bench
prefix = "psra_bench."
names = sorted(
    m.name.removeprefix(prefix)
    for m in pkgutil.walk_packages(psra_bench.__path__, prefix)
    if not m.name.endswith("__main__")
)
for name in names:
    importlib.import_module(prefix + name)
me = psutil.Process()
print(json.dumps({
    "modules": names,
    "children": [c.name() for c in me.children(recursive=True)],
    "inet": [str(c) for c in me.net_connections("inet")],
}))
"""


def test_imports_start_nothing_and_connect_nowhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = tmp_path / "state"
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "xdg"),
        "PSRA_BENCH_HOME": str(state),
        "PSRA_DB_DSN": "postgresql://u@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"cli", "infra.embedded", "infra.postgres", "settings", "db.migrate", "db.seed", "db.dal"} <= set(
        facts["modules"]
    )
    assert len(facts["modules"]) >= 60  # every subpackage was walked, not only the top level
    assert facts["children"] == []  # no server (or anything else) was started
    assert facts["inet"] == []  # no socket was opened
    assert not state.exists()  # no state folder was created
    assert not (home / "xdg" / "psra-bench").exists()


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "psra_bench", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: psra-bench") or "Usage:" in out.stdout
    for command in ("services", "seed", "migrate", "doctor"):
        assert command in out.stdout


# --------------------------------------------------------------------------- vendored data and SQL


def test_hs_csv_has_6940_rows_and_is_attributed() -> None:
    data = PACKAGE / "data"
    with open(data / "harmonized-system.csv", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == ["section", "hscode", "description", "parent", "level"]
    assert len(rows) == 6940
    assert len(hs_rows()) == 6940
    codes = [r.code for r in hs_rows()]
    assert len(set(codes)) == len(codes)
    assert {r.level for r in hs_rows()} <= {2, 4, 5, 6}
    assert len(hs_sections()) == 21

    readme = (data / "README.md").read_text()
    for fact in ("harmonized-system.csv", "hs-sections.csv", "rules.json", "6,940", "UN Comtrade", "ODC-PDDL"):
        assert fact in readme, fact


def test_rules_json_has_the_13_rules() -> None:
    ids = [r["rule_id"] for r in rules()]
    assert len(ids) == 13 == len(set(ids))
    assert {"CETA-HS39-001", "TCA-HS40-002", "TCA-HS40-001"} <= set(ids)
    tca2 = next(r for r in rules() if r["rule_id"] == "TCA-HS40-002")
    assert tca2["supersedes"] == ["TCA-HS40-001"] and tca2["hs_subheading"] == "401110"


@pytest.mark.parametrize(
    "name",
    [
        "schema.sql",
        "verify.sql",
        "migrations/0001_performance_indexes.up.sql",
        "migrations/0001_performance_indexes.down.sql",
    ],
)
def test_sql_files_are_found(name: str) -> None:
    path = db.sql_path(name)
    assert path.is_file() and path.read_text().strip()
