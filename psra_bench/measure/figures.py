"""Figures for the notebooks' plots: matplotlib's object API, no pyplot state, imported only when drawing.

Importing this module (or any ``plots`` module built on it) does not import matplotlib; the
first figure does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib Figure of ``figsize`` inches, not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig: Figure, output_dir: str | os.PathLike[str], filename: str, dpi: int) -> Figure:
    """Save ``fig`` as ``output_dir/filename.png`` (the folder is made if missing); return it for display."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{filename}.png", dpi=dpi)
    return fig
