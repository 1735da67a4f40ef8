"""Notebook 03's TTL explorer: sliders over the TTL simulation, and when to show them.

``interactive = None`` in the notebook means *auto*, decided by :func:`resolve_interactive`
from what the kernel can see of who runs it: nbval (a pytest plugin) starts its kernel while a
test is being set up, so the kernel inherits ``PYTEST_CURRENT_TEST``; papermill runs the cell it
injects after the ``parameters`` cell with history on, so the kernel's input history holds a cell
whose first line is papermill's ``# Parameters`` comment. Anything else is a live kernel
(JupyterLab, Notebook, VS Code). ipywidgets, IPython and matplotlib are imported only when the
sliders are built (they come with the ``notebooks`` extra).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from psra_bench.cachesim.experiment import what_if
from psra_bench.cachesim.workload import ENTITIES, ENTITY_LABELS, WorkloadSpec, generate_trace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "NBVAL_ENV",
    "PAPERMILL_MARKER",
    "Interactivity",
    "papermill_injected",
    "resolve_interactive",
    "what_if_lines",
    "what_if_figure",
    "ttl_explorer",
    "show_ttl_explorer",
]

#: Set by pytest (so by nbval) in the environment while a test runs; a kernel started then inherits it.
NBVAL_ENV = "PYTEST_CURRENT_TEST"
#: First line of the cell papermill injects into a Python notebook (``PythonTranslator.codify``).
PAPERMILL_MARKER = "# Parameters"


@dataclass(frozen=True)
class Interactivity:
    """Whether notebook 03 builds its sliders, and why (printed when they are skipped)."""

    enabled: bool
    reason: str


def papermill_injected(source: str) -> bool:
    """True if ``source`` is a cell papermill injected (its first line is papermill's ``# Parameters``)."""
    lines = source.lstrip().splitlines()
    return bool(lines) and lines[0].strip() == PAPERMILL_MARKER


def resolve_interactive(interactive: bool | None, environ: Mapping[str, str], inputs: Sequence[str]) -> Interactivity:
    """``interactive`` when given; None (auto): off under nbval/pytest or papermill, on in a live kernel."""
    if interactive is not None:
        return Interactivity(bool(interactive), f"interactive = {bool(interactive)}")
    if environ.get(NBVAL_ENV):
        return Interactivity(False, f"auto: the kernel runs under pytest/nbval ({NBVAL_ENV} is set)")
    if any(papermill_injected(s) for s in inputs):
        return Interactivity(False, "auto: papermill injected the parameters")
    return Interactivity(True, "auto: a live kernel")


def what_if_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per entity of a :func:`~psra_bench.cachesim.experiment.what_if` result: TTL, hit rate, staleness."""
    lines = []
    for e, r in result["entities"].items():
        if not r["n"]:
            lines.append(f"{ENTITY_LABELS.get(e, e):<20} TTL {r['ttl_s']:>6g} s  no reads")
            continue
        lo, hi = r["hit_rate_ci"]
        stale = f"{r['stale_share']:.1%} stale, max {r['max_stale_s'] or 0:,.0f} s"
        lines.append(
            f"{ENTITY_LABELS.get(e, e):<20} TTL {r['ttl_s']:>6g} s  hit rate {r['hit_rate']:.1%} "
            f"[{lo:.1%}–{hi:.1%}] n={r['n']}  {stale}"
        )
    return lines


def what_if_figure(result: Mapping[str, Any]) -> Figure:
    """Bars of hit rate and stale share per entity for a what-if result (a pyplot-free Figure)."""
    from matplotlib.figure import Figure

    names = [e for e, r in result["entities"].items() if r["n"]]
    rows = [result["entities"][e] for e in names]
    x = list(range(len(rows)))
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    ax.bar([i - 0.2 for i in x], [r["hit_rate"] * 100 for r in rows], width=0.4, label="hit rate %")
    ax.bar([i + 0.2 for i in x], [r["stale_share"] * 100 for r in rows], width=0.4, label="stale reads %")
    ax.set_xticks(x, [ENTITY_LABELS.get(e, e) for e in names])
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _redraw(
    spec: WorkloadSpec,
    *,
    invalidate: bool,
    key_skew: float | None = None,
    hs_updates: float | None = None,
    rule_updates: float | None = None,
    **ttls: float,
) -> None:
    from IPython.display import Image, display

    result = what_if(
        spec,
        ttls,
        zipf_s=key_skew,
        hs_updates_per_hour=hs_updates,
        rule_updates_per_hour=rule_updates,
        invalidate_on_update=invalidate,
    )
    print("\n".join(what_if_lines(result)))
    buf = io.BytesIO()
    what_if_figure(result).savefig(buf, format="png", dpi=80)
    display(Image(data=buf.getvalue()))


def ttl_explorer(spec: WorkloadSpec, current_ttls: Mapping[str, float], grid_s: Sequence[float]) -> Any:
    """An ipywidgets box: a TTL slider per entity, key skew, update rates, invalidation, and the output they redraw."""
    import ipywidgets as widgets

    entities = generate_trace(spec).entity_names if spec.trace_file else ENTITIES  # an imported trace: its own
    options = sorted(set(grid_s) | {float(v) for v in current_ttls.values()})
    wide = {"description_width": "160px"}
    row = {"width": "520px"}  # a dict: each widget gets its own Layout
    controls: dict[str, Any] = {
        e: widgets.SelectionSlider(
            options=options,
            value=float(current_ttls[e]),
            description=f"{e} TTL s",
            continuous_update=False,
            style=wide,
            layout=row,
        )
        for e in entities
    }
    if not spec.trace_file:  # skew and update rates shape a drawn trace only
        _workload_sliders(controls, spec, wide, row)
    controls["invalidate"] = widgets.Checkbox(
        value=False, description="invalidate on update (CachedDAL)", indent=False, layout=row
    )
    output = widgets.interactive_output(partial(_redraw, spec), controls)
    return widgets.VBox([widgets.VBox(list(controls.values())), output])


def _workload_sliders(controls: dict[str, Any], spec: WorkloadSpec, wide: dict[str, str], row: dict[str, str]) -> None:
    import ipywidgets as widgets

    controls["key_skew"] = widgets.FloatSlider(
        value=spec.zipf_s,
        min=0.0,
        max=2.0,
        step=0.05,
        description="key skew (Zipf s)",
        continuous_update=False,
        style=wide,
        layout=row,
    )
    rates = spec.updates_per_hour
    rate_sliders = (("hs_updates", "hs_codes", "HS updates/h"), ("rule_updates", "rules", "rule updates/h"))
    for name, entity, label in rate_sliders:
        controls[name] = widgets.FloatLogSlider(
            value=max(rates[entity], 0.1),
            base=10,
            min=-1,
            max=3,
            step=0.1,
            description=label,
            continuous_update=False,
            style=wide,
            layout=row,
        )


def show_ttl_explorer(
    spec: WorkloadSpec, current_ttls: Mapping[str, float], grid_s: Sequence[float], mode: Interactivity
) -> None:
    """Display the explorer when ``mode`` is enabled, else print one line saying why it was skipped."""
    if not mode.enabled:
        print(f"sliders skipped ({mode.reason}); set interactive = True to show them")
        return
    from IPython.display import display

    display(ttl_explorer(spec, current_ttls, grid_s))
