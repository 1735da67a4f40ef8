"""Shared by the notebook generators: stable cell ids, kernel metadata, validated writing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook


def finish(cells: Sequence[nbformat.NotebookNode], prefix: str) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with ids ``<prefix>-NN`` (regenerating gives the same file) and a python3 kernel."""
    for i, cell in enumerate(cells):
        cell["id"] = f"{prefix}-{i:02d}"
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write(notebook: nbformat.NotebookNode, out: Path) -> None:
    """Validate and write ``notebook`` to ``out``."""
    nbformat.validate(notebook)
    nbformat.write(notebook, out)
    print(f"wrote {out}")
