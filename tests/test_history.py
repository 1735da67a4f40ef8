"""The history page (reports/index.html) and its step detection, on synthetic history entries.

No database: the entries are written with ``append_history`` and read back with ``read_history``,
so the page is built from the real history format. The browser test opens the page in headless
Chromium from a file:// URL and checks what a reader would see: the title, loaded images, and a
table of contents whose links all land.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium_path

from psra_bench.exceptions import ParameterError
from psra_bench.report.assemble import append_history, read_history
from psra_bench.report.history import (
    TREND_GROUPS,
    Step,
    _highs,
    comparable_runs,
    detect_steps,
    trend_series,
    write_history_page,
)

MACHINE = "box-a1b2"
SCALE = 10_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

# --------------------------------------------------------------------------- detect_steps

#: A ±3 % pattern around 100 (no randomness: the test fails the same way every time).
NOISE = [1.0, 1.03, 0.98, 0.97, 1.02, 1.0, 0.99, 1.03, 0.97, 1.01, 1.02, 0.98, 1.0, 0.97, 1.03, 0.99, 1.01, 0.98]


def test_sustained_drift_is_one_step_although_no_pair_of_runs_differs_by_the_factor() -> None:
    values = [100, 100, 100, 104, 108, 112, 113, 112]
    assert max(max(b / a, a / b) for a, b in zip(values, values[1:], strict=False)) < 1.1
    assert detect_steps(values, factor=1.1) == [Step(index=4, before=100.0, after=112.0, ratio=1.12)]


def test_noise_around_one_level_is_not_a_step() -> None:
    values = [100 * f for f in NOISE]
    assert detect_steps(values) == []
    assert detect_steps(values, penalty=0.0) == [], "even a fit of many segments merges back to one level"
    assert detect_steps(values, factor=1.01, penalty=0.0) != [], "the same noise is a step at factor 1.01"


@pytest.mark.parametrize("where", [0, 4, 9, 17])
def test_a_single_outlier_run_is_not_a_step(where: int) -> None:
    values = [100 * f for f in NOISE]
    values[where] = 300.0
    assert detect_steps(values) == []


def test_a_step_down_is_found_with_a_ratio_below_one() -> None:
    hit_rate = [0.90, 0.91, 0.89, 0.90, 0.90, 0.61, 0.60, 0.59, 0.60]
    (step,) = detect_steps(hit_rate)
    assert step.index == 5
    assert step.before == pytest.approx(0.90)
    assert step.after == pytest.approx(0.60)
    assert step.ratio == pytest.approx(0.60 / 0.90)


def test_a_step_needs_min_size_runs_on_each_side() -> None:
    assert detect_steps([100, 100, 100, 100, 150]) == [], "a change in the last run only is not a step yet"
    assert detect_steps([100, 100, 100, 150, 150]) == [Step(3, 100.0, 150.0, 1.5)]
    assert detect_steps([100, 100, 100, 150, 150], min_size=3) == []


def test_a_large_penalty_keeps_one_segment() -> None:
    values = [100, 100, 100, 104, 108, 112, 113, 112]
    assert detect_steps(values, penalty=10.0) == []


def test_two_steps_each_with_its_own_medians() -> None:
    values = [10, 10, 10, 20, 20, 20, 20, 5, 5, 5]
    assert detect_steps(values) == [Step(3, 10.0, 20.0, 2.0), Step(7, 20.0, 5.0, 0.25)]


def test_short_or_empty_series_have_no_step() -> None:
    assert detect_steps([]) == []
    assert detect_steps([100.0, 200.0, 300.0]) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"values": [1.0, 0.0, 2.0]}, "values[1]"),
        ({"values": [1.0, -2.0]}, "values[1]"),
        ({"values": [math.nan, 1.0]}, "values[0]"),
        ({"values": [1.0, math.inf]}, "values[1]"),
        ({"values": [1.0, "2"]}, "values[1]"),
        ({"values": [1.0, 2.0], "factor": 1.0}, "factor"),
        ({"values": [1.0, 2.0], "factor": 0.5}, "factor"),
        ({"values": [1.0, 2.0], "factor": math.nan}, "factor"),
        ({"values": [1.0, 2.0], "min_size": 0}, "min_size"),
        ({"values": [1.0, 2.0], "min_size": 1.5}, "min_size"),
        ({"values": [1.0, 2.0], "penalty": -1.0}, "penalty"),
        ({"values": [1.0, 2.0], "penalty": math.inf}, "penalty"),
    ],
)
def test_bad_input_is_a_parameter_error_naming_it(kwargs: dict[str, Any], name: str) -> None:
    values = kwargs.pop("values")
    with pytest.raises(ParameterError) as err:
        detect_steps(values, **kwargs)
    assert err.value.name == name
    assert str(err.value).startswith(f"{name}=")
    assert "is not valid" in str(err.value)


# --------------------------------------------------------------------------- history entries


def _entry(
    n: int,
    *,
    machine: str = MACHINE,
    scale: int | None = SCALE,
    trend: dict[str, dict[str, float]] | None = None,
    regressions: list[str] | None = None,
) -> dict[str, Any]:
    """A history entry as assemble_report writes it (trend, regressions and report only when given)."""
    day, hour = 1 + n // 24, n % 24
    run_id = f"202612{day:02d}T{hour:02d}0000Z-{n:04x}"
    entry: dict[str, Any] = {
        "run_id": run_id,
        "machine_key": machine,
        "scale": scale,
        "quick": n % 2 == 1,
        "finished_at": f"2026-12-{day:02d}T{hour:02d}:10:00+00:00",
        "headline": {"queries.q_lookup": {"p50": 1.0}},
    }
    if trend is not None:
        entry |= {"trend": trend, "regressions": regressions or [], "report": f"{run_id}/report.html"}
    return entry


#: ±3 % per comparable run 2..11, with a median of 1 before and after each step of _comparable.
WOBBLE = [1.0, 0.98, 1.02, 1.0, 1.03, 0.97, 1.0, 0.99, 1.01, 1.0]


def _comparable(n: int) -> dict[str, Any]:
    """Run n of the main machine: q_search steps ×1.5 at run 5, the verdict hit rate falls at run 6."""
    wobble = WOBBLE[n - 2]
    trend: dict[str, dict[str, float]] = {
        "query_p50_ms": {"q_search": (20.0 if n < 5 else 30.0) * wobble},
        "hit_rate": {"verdict": (0.9 if n < 6 else 0.6) * wobble, "rule": 0.8 * wobble},
        "users_supported": {"both": 400.0 + n, "baseline": 100.0},
        "users_supported_high": {"both": 440.0 + n},  # the bracket's upper end ("baseline": every step passed)
    }
    if n != 3:  # q_lookup was not measured in run 3: a gap
        trend["query_p50_ms"]["q_lookup"] = 2.0 * wobble
    return _entry(n, trend=trend, regressions=["queries.q_search"] if n == 5 else [])


@pytest.fixture
def history(tmp_path: Path) -> list[dict[str, Any]]:
    """2 old entries (no trend), 10 comparable runs, and 3 runs of another machine or scale, through history.jsonl."""
    path = tmp_path / "history.jsonl"
    for n in range(2):
        append_history(path, _entry(n))
    for n in range(2, 12):
        append_history(path, _comparable(n))
        if n in (4, 8):  # another machine at the same scale, with a huge q_lookup and a group the others lack
            trend = {"query_p50_ms": {"q_lookup": 900.0}, "api_p95_ms": {"both": 5.0}}
            append_history(path, _entry(n + 50, machine="box<b>&other", trend=trend))
    append_history(path, _entry(70, scale=1_000, trend={"query_p50_ms": {"q_lookup": 1.0}}))
    return read_history(path)


def _fake_reports(reports_dir: Path, entries: list[dict[str, Any]]) -> None:
    """A small report.html where each entry's ``report`` points, so the page's links can be followed."""
    for entry in entries:
        if "report" in entry:
            target = reports_dir / entry["report"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"<!doctype html><title>report {entry['run_id']}</title><h1>{entry['run_id']}</h1>")


class _Page(HTMLParser):
    """Ids, hrefs, images (their attributes) and headings of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.headings: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if tag == "img":
            self.images.append(a)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(a)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _row(text: str, run_id: str) -> str:
    """The one table row of the runs table whose first cell is ``run_id``."""
    (row,) = [r for r in re.findall(r"<tr>.*?</tr>", text) if f">{run_id}</a></td>" in r]
    return row


def test_comparable_runs_split_by_machine_key_and_scale(history: list[dict[str, Any]]) -> None:
    comparable, others = comparable_runs(history, MACHINE, SCALE)
    assert [e["run_id"] for e in comparable] == [_entry(n)["run_id"] for n in range(12)]
    assert sorted((e["machine_key"], e["scale"]) for e in others) == [
        (MACHINE, 1_000),
        ("box<b>&other", SCALE),
        ("box<b>&other", SCALE),
    ]
    assert comparable_runs(history, MACHINE, None) == ([], history)


def test_trend_series_has_gaps_where_a_run_did_not_measure(history: list[dict[str, Any]]) -> None:
    comparable, _ = comparable_runs(history, MACHINE, SCALE)
    series = trend_series(comparable, "query_p50_ms")
    assert list(series) == ["q_lookup", "q_search"], "first-seen order (history.jsonl sorts the keys)"
    lookup = series["q_lookup"]
    assert [i for i, v in enumerate(lookup) if math.isnan(v)] == [0, 1, 3], "old entries and run 3 are gaps"
    assert max(v for v in lookup if not math.isnan(v)) < 3, "the other machine's 900 ms is not in it"
    assert trend_series(comparable, "api_p95_ms") == {}
    assert set(TREND_GROUPS) == {"query_p50_ms", "hit_rate", "api_p95_ms", "users_supported"}
    highs = _highs(comparable, "users_supported")
    assert highs is not None and list(highs) == ["both"], "the bracket is drawn on its group, not as a group"
    assert [v for v in highs["both"] if not math.isnan(v)] == [440.0 + n for n in range(2, 12)]
    assert TREND_GROUPS["hit_rate"].higher_is_better and not TREND_GROUPS["query_p50_ms"].higher_is_better


def test_history_page_shows_trends_steps_runs_and_the_other_runs(tmp_path: Path, history: list[dict[str, Any]]) -> None:
    reports = tmp_path / "reports"
    path = write_history_page(reports, history, machine_key=MACHINE, scale=SCALE)
    assert path == reports / "index.html"
    assert sorted(p.name for p in reports.iterdir()) == ["index.html"], "no temporary file left behind"
    text = path.read_text()
    page = _parse(text)
    comparable, others = comparable_runs(history, MACHINE, SCALE)

    assert "12 comparable runs" in text and f"<code>{MACHINE}</code>" in text and "10,000 verdicts" in text
    trends, rest = text.split("id='runs'")
    runs, other_section = rest.split("id='other-runs'")
    for entry in comparable[2:]:  # every comparable run with a report is linked, in the runs table
        assert f"<a href='{entry['report']}'>{entry['run_id']}</a>" in runs
    for entry in comparable[:2]:  # old entries (no report field) are listed without a link
        assert f"<td>{entry['run_id']}</td>" in runs
    assert runs.index(comparable[-1]["run_id"]) < runs.index(comparable[2]["run_id"]), "newest first"

    # Other runs: only in their own section, escaped, never plotted.
    for entry in others:
        assert entry["run_id"] not in trends + runs
        assert entry["run_id"] in other_section
    assert "box&lt;b&gt;&amp;other" in other_section and "box<b>" not in text
    assert "1,000 verdicts" in other_section
    assert "trend-api_p95_ms" not in text, "only the other machine measured api_p95_ms: no plot for it"

    # One plot per group the comparable runs have, each with its steps.
    assert {f"trend-{g}" for g in ("query_p50_ms", "hit_rate", "users_supported")} <= page.ids
    assert len(page.images) == 3
    assert all(img["alt"] and str(img["src"]).startswith("data:image/png;base64,") for img in page.images)
    step_rows = re.findall(
        r"<tr><td>(\w+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>(\w+)</td></tr>", trends
    )
    assert ("q_search", _entry(5)["run_id"], "20 → 30", "×1.500", "worse") in step_rows
    assert ("verdict", _entry(6)["run_id"], "0.9 → 0.6", "×0.667", "worse") in step_rows
    assert [r[0] for r in step_rows] == ["q_search", "verdict"], (
        "noise (rule, q_lookup) and a slow +1/run are not steps"
    )

    # Regressions flagged on the run that had them, not on the others.
    assert "class='regressed'>⚠ 1: queries.q_search" in _row(text, _entry(5)["run_id"])
    assert "regressed" not in _row(text, _entry(6)["run_id"])
    assert "<td>411</td>" in _row(text, _entry(11)["run_id"]), "headline: users supported (both)"


def test_history_page_structure_headings_images_and_toc(tmp_path: Path, history: list[dict[str, Any]]) -> None:
    page = _parse(write_history_page(tmp_path, history, machine_key=MACHINE, scale=SCALE).read_text())
    assert page.headings and all(h.get("id") for h in page.headings)
    assert all(img.get("alt") for img in page.images)
    local = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert {"trends", "runs", "other-runs", "trend-hit_rate"} <= set(local)
    assert set(local) <= page.ids


@pytest.mark.parametrize("n_comparable", [0, 1])
def test_history_page_without_a_trend_yet(tmp_path: Path, n_comparable: int) -> None:
    path = tmp_path / "history.jsonl"
    for n in range(n_comparable):
        append_history(path, _comparable(n + 2))
    append_history(path, _entry(60, machine="elsewhere", trend={"hit_rate": {"rule": 0.5}}))
    text = write_history_page(tmp_path, read_history(path), machine_key=MACHINE, scale=SCALE).read_text()
    page = _parse(text)
    assert "Not yet a trend" in text and f"{n_comparable} comparable run" in text
    assert page.images == [] and "trend-" not in text
    assert _entry(60)["run_id"] in text.split("id='other-runs'")[1]
    assert set(h[1:] for h in page.hrefs if h.startswith("#")) <= page.ids
    if n_comparable:
        assert f"href='{_entry(2)['run_id']}/report.html'" in text


def test_history_page_replaces_the_previous_one(tmp_path: Path, history: list[dict[str, Any]]) -> None:
    (tmp_path / "index.html").write_text("old page")
    write_history_page(tmp_path, history[:5], machine_key=MACHINE, scale=SCALE)
    assert "5 comparable runs" in (tmp_path / "index.html").read_text()


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, psra_bench.report.history; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- a real browser


def test_history_page_in_a_browser(tmp_path: Path, history: list[dict[str, Any]]) -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("no Chromium found (/usr/bin/chromium or chromium on PATH): apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    reports = tmp_path / "reports"
    _fake_reports(reports, history)
    path = write_history_page(reports, history, machine_key=MACHINE, scale=SCALE)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(path.as_uri())
            assert page.locator("h1#title").is_visible()
            assert page.title() == "PSRA report history"
            images = page.eval_on_selector_all("img", "els => els.map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            assert len(images) == 3 and all(alt and loaded for alt, loaded in images), images
            toc = page.eval_on_selector_all(
                "nav a[href^='#']",
                "els => els.map(a => [a.hash, !!document.getElementById(decodeURIComponent(a.hash.slice(1)))])",
            )
            assert len(toc) == 6 and all(found for _, found in toc), toc
            reports_links = page.eval_on_selector_all(
                "a:not([href^='#'])", "els => els.map(a => a.getAttribute('href'))"
            )
            assert len(reports_links) == 10 + 3
            for href in reports_links:
                assert (reports / urllib.parse.unquote(href)).is_file(), href
            newest = _entry(11)["run_id"]
            page.locator("table.runs a", has_text=newest).click()
            page.wait_for_url(f"**/{newest}/report.html")
            assert page.title() == f"report {newest}"
        finally:
            browser.close()


def test_history_page_rejects_a_bad_factor_even_without_a_trend(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"^factor=1\.0 is not valid"):
        write_history_page(tmp_path, [], machine_key=MACHINE, scale=SCALE, factor=1.0)
    assert not (tmp_path / "index.html").exists()
