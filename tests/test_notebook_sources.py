"""The notebooks are generated: ``notebooks/_build/make_0N.py`` is the source, the ``.ipynb`` its output.

Editing a notebook in JupyterLab and committing it without its generator (or the reverse) would
let the two drift apart; this test regenerates every notebook in a scratch folder and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
GENERATORS = sorted((NOTEBOOKS / "_build").glob("make_*.py"))


def test_every_notebook_has_a_generator() -> None:
    made = {g.stem.removeprefix("make_") for g in GENERATORS}
    notebooks = {nb.name[:2] for nb in NOTEBOOKS.glob("*.ipynb")}
    assert made == notebooks and len(notebooks) == 6


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.stem)
def test_notebook_matches_its_generator(generator: Path, tmp_path: Path) -> None:
    build = tmp_path / "notebooks" / "_build"
    shutil.copytree(NOTEBOOKS / "_build", build, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, str(build / generator.name)], check=True, capture_output=True)
    (made,) = (tmp_path / "notebooks").glob(f"{generator.stem.removeprefix('make_')}_*.ipynb")
    committed = NOTEBOOKS / made.name
    assert made.read_text() == committed.read_text(), (
        f"{committed.name} differs from what {generator.name} writes: edit the generator and run "
        f"`python notebooks/_build/{generator.name}`"
    )
