"""`psra-bench report` end to end, the report assembly, history and regression flags, bad params."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import chromium_path, cli_env, quick_report_argv
from replay_fixtures import WRITERS, traffic

from psra_bench.cli import cli
from psra_bench.exceptions import MeasurementError
from psra_bench.load.replay_tables import REPLAY_TITLES
from psra_bench.load.results import users_supported
from psra_bench.measure.stats import summarize
from psra_bench.report.assemble import (
    append_history,
    assemble_report,
    find_regressions,
    previous_comparable,
    read_history,
)
from psra_bench.report.runner import ReportParams, load_params_file, merge_params
from psra_bench.results import LoadTestResult
from psra_bench.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FILES = ["report.html", "report.md", "results.json", "history"] + [
    f"{n}.ipynb" for n in ("01_query_latency", "02_cache_hit_rates", "03_ttl_tuning", "04_load_test", "05_report")
]


@pytest.fixture(scope="module")
def quick_run(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real `psra-bench report --quick` (tiny scale) in a subprocess; its run folder and output."""
    reports = tmp_path_factory.mktemp("reports")
    params = reports / "params.yml"
    log = WRITERS["jsonl"](reports / "access.jsonl", traffic())  # the team's recorded traffic, replayed in 04
    params.write_text(
        "verdicts: 3000\niterations: 4\ncache_requests: 400\nusers: 2\nduration: 2\ndatabase: psra_bench_report_test\n"
        f"from_log: {log}\nlog_format: jsonl\nlog_speed: 12\n"
    )
    proc = subprocess.run(
        quick_report_argv(params, reports),
        env=cli_env(
            settings, home=tmp_path_factory.mktemp("home"), PSRA_CACHE_NAMESPACE=settings.cache_namespace + "report"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in reports.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return {"dir": runs[0], "reports": reports, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_report_writes_every_file(quick_run: dict[str, Any], settings: Settings) -> None:
    run_dir: Path = quick_run["dir"]
    for name in FILES:
        if name == "history":
            assert (quick_run["reports"] / "history.jsonl").exists()
        else:
            assert (run_dir / name).exists(), name
    assert list(run_dir.glob("*.png")), "plots are saved next to the report"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] is True
    assert set(results["sections"]) == {"query_latency", "cache", "ttl", "load", "replay"}
    # Every measured latency row carries n and a CI.
    for row in results["sections"]["query_latency"]["table"]:
        assert row["n_before"] > 0 and row["n_after"] > 0
        assert len(row["before_p50_ci"]) == 2 and len(row["after_p50_ci"]) == 2
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html, "plots are embedded: the page is self-contained"
    assert "Query latency" in html and "Cache Hit Rates" in html and "Overall system performance" in html
    # No secret of the settings leaks into anything the report wrote.
    assert settings.redis is not None
    for path in list(run_dir.glob("*.json")) + list(run_dir.glob("*.md")) + list(run_dir.glob("*.ipynb")):
        text = path.read_text()
        assert "password" not in text.lower() or '"password": "***"' in text.lower()
    assert "report finished" in quick_run["stdout"]
    # Where every notebook is, in plain lines (not a terminal); no kernel talks over TCP.
    err = quick_run["stderr"]
    assert "query latency: [" in err and "load steps: [" in err and "load test: [" in err, err[-3000:]
    assert "without encryption" not in err
    stages = {json.loads(line)["stage"] for line in (run_dir / "progress.jsonl").read_text().splitlines()}
    assert {"query latency", "load test", "load steps"} <= stages


@pytest.mark.slow
def test_quick_report_replays_the_given_log_with_its_capacity(quick_run: dict[str, Any]) -> None:
    """report --from-log: the load section's replay, in the report's own section with its plot and a finding."""
    run_dir: Path = quick_run["dir"]
    replay = json.loads((run_dir / "04_load_replay.json").read_text())
    assert replay["configuration"] == "both" and replay["capacity"]["capacity"]["steps"]
    md = (run_dir / "report.md").read_text()
    section = md.split("## Load from your recorded traffic", 1)[1].split("\n## ", 1)[0]
    for title in REPLAY_TITLES[:3]:
        assert title in section, title
    assert "04_load_replay_rates.png" in section  # the recorded vs replayed rate beside its table
    summary = md.split("## Summary", 1)[1].split("## Recommendations", 1)[0]
    users = next(line for line in summary.splitlines() if line.startswith("- Users supported"))
    assert "your recorded traffic (" in users and "users supported at its own mix" in users  # one finding, not two


@pytest.mark.slow
def test_quick_report_opens_with_findings_and_recommendations(quick_run: dict[str, Any]) -> None:
    run_dir: Path = quick_run["dir"]
    md = (run_dir / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Summary", "## Recommendations"]
    summary = md.split("## Summary", 1)[1].split("## Recommendations", 1)[0]
    findings = [line for line in summary.splitlines() if line.startswith("- ")]
    assert 5 <= len(findings) <= 8, findings
    measured = [f for f in findings if "no earlier comparable run" not in f]  # a first run has nothing to compare
    assert all(any(ch.isdigit() for ch in f) for f in measured), findings
    assert "n = " in summary and "[" in summary, "findings carry n and CIs"
    # speedups are factors with a CI, never "-100 %"; a tiny p-value prints as "< 0.001", not 0.0000
    assert "-100 %" not in md and "×" in md
    results = json.loads((run_dir / "results.json").read_text())
    latency = next(t for t in results["tables"] if t["title"].startswith("Query latency"))
    p_col = latency["columns"].index("p (MWU)")
    assert all(row[p_col] == "< 0.001" or float(row[p_col]) >= 0.001 for row in latency["rows"])
    q = results["sections"]["query_latency"]
    assert len(q["audit"]) == 46 and "Index audit (46 indexes)" in md
    assert "Three index sets: baseline / spec / recommended" in md
    assert set(q["recommended"]["queries"]) == set(q["queries"])
    up = (run_dir / "recommended_indexes.up.sql").read_text()
    assert all(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {n} " in up for n in q["recommended"]["indexes"])
    assert (run_dir / "recommended_indexes.down.sql").exists()
    assert results["summary"]["findings"] == [f[2:] for f in findings]
    page = (quick_run["reports"] / "index.html").read_text()
    assert f"{results['run_id']}/report.html" in page


@pytest.mark.slow
def test_report_html_in_a_real_browser(quick_run: dict[str, Any]) -> None:
    """Headless Chromium: the page renders, every image loads, every table-of-contents link lands on a heading."""
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("no Chromium found (/usr/bin/chromium or chromium on PATH): apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((quick_run["dir"] / "report.html").resolve().as_uri())
            assert page.locator("h1").inner_text().startswith("PSRA performance report")
            assert page.locator("h2").first.inner_text() == "Summary"
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
            assert len(images) >= 10 and all(ok for _, ok in images), images
            targets = page.eval_on_selector_all(
                "nav.toc a", "els => els.map(a => [a.getAttribute('href'), !!document.getElementById(a.hash.slice(1))])"
            )
            assert len(targets) >= 6 and all(ok for _, ok in targets), targets
            # a plot sits in the same block as its table
            assert page.locator(".pair table").count() >= 5 and page.locator(".pair img").count() >= 5
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_deliberately_slowed_run_is_flagged(quick_run: dict[str, Any]) -> None:
    """Rebuild the same run's report against a history whose previous run was 3× faster."""
    run_dir: Path = quick_run["dir"]
    results = json.loads((run_dir / "results.json").read_text())
    history = quick_run["reports"] / "history.jsonl"
    faster: dict[str, Any] = {}
    for key, stats in results["headline"].items():
        samples = [s / 3 for s in stats["samples_ms"]]
        faster[key] = summarize(samples).to_dict()
    append_history(
        history,
        {
            "run_id": "earlier-faster",
            "machine_key": results["machine_key"],
            "scale": results["scale"],
            "headline": faster,
        },
    )
    again = assemble_report(run_dir, results["run_id"], reports_dir=quick_run["reports"], quick=True)
    flagged = {r["item"] for r in again["regressions"]}
    # A 3× slowdown passes the factor gate everywhere; with 8+ samples a side, most pass MWU too.
    clear = {k for k, v in results["headline"].items() if v["n"] >= 8}
    assert clear, "the quick run measured items with enough samples"
    assert len(flagged & clear) >= len(clear) / 2, (flagged, clear)
    assert flagged <= set(results["headline"])
    assert again["previous_run"] == "earlier-faster"
    assert "Regressions against the previous comparable run" in (run_dir / "report.md").read_text()
    assert "regressed against run earlier-faster" in (run_dir / "report.md").read_text()
    # the history page now spans the runs: both listed, the slowed one flagged
    page = (quick_run["reports"] / "index.html").read_text()
    assert "earlier-faster" in page and f"{results['run_id']}/report.html" in page


def _stats(samples: list[float]) -> dict[str, Any]:
    return summarize(samples).to_dict()


def test_find_regressions_needs_factor_and_significance() -> None:
    base = [10.0 + (i % 7) * 0.1 for i in range(40)]
    previous = {"q.after": _stats(base), "same.after": _stats(base), "tiny.after": _stats(base)}
    current = {
        "q.after": _stats([s * 1.5 for s in base]),
        "same.after": _stats(base),
        "tiny.after": _stats([s * 1.03 for s in base]),
    }
    flagged = [r["item"] for r in find_regressions(previous, current, factor=1.1, alpha=0.05)]
    assert flagged == ["q.after"]


def test_history_ignores_incomplete_lines_and_other_machines(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_history(path, {"run_id": "a", "machine_key": "m1", "scale": 100, "headline": {}})
    append_history(path, {"run_id": "b", "machine_key": "m2", "scale": 100, "headline": {}})
    with open(path, "a") as fh:
        fh.write('{"run_id": "interrupted", "machine_key": "m1", "sca')  # a write cut short
    entries = read_history(path)
    assert [e["run_id"] for e in entries] == ["a", "b"]
    assert previous_comparable(entries, "m1", 100)["run_id"] == "a"  # type: ignore[index]
    assert previous_comparable(entries, "m1", 200) is None


def test_an_interrupted_assembly_leaves_no_results_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"complete": true, "stale": true}')
    with pytest.raises(MeasurementError, match="no section results"):
        assemble_report(tmp_path, "x")
    assert not (tmp_path / "results.json").exists(), "an older results.json must not survive to be trusted"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("verdicts: 0\n", "verdicts=0"),
        ("verdicts: -5\n", "verdicts=-5"),
        ("bogus_key: 1\n", "bogus_key"),
        ("sections: [01_query_latency, 09_nope]\n", "09_nope"),
        ("slo_p95_ms: 0\n", "slo_p95_ms=0"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_params_file_fails_before_any_work(tmp_path: Path, text: str, needle: str) -> None:
    params = tmp_path / "p.yml"
    params.write_text(text)
    reports = tmp_path / "reports"
    result = CliRunner().invoke(
        cli,
        ["report", "--params", str(params), "--reports-dir", str(reports)],
        env={"PSRA_DB_DSN": "postgresql://u:pw@127.0.0.1:1/x", "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not reports.exists(), "nothing was started or written"


def test_flags_override_the_params_file(tmp_path: Path) -> None:
    params = tmp_path / "p.yml"
    params.write_text("verdicts: 5000\nusers: 3\n")
    merged = merge_params(ReportParams.quick_defaults(), load_params_file(params), {"verdicts": 7000, "users": None})
    assert (merged.verdicts, merged.users, merged.quick) == (7000, 3, True)


def test_the_load_section_says_per_step_whether_the_generator_or_the_system_limits() -> None:
    from psra_bench.report.sections import load_tables

    def step(users: int, p95: float, api: float, gen: float) -> dict[str, Any]:
        return {
            "users": users,
            "overall": {"n": 10 * users, "p95_ms": p95, "rps": float(users), "failure_rate": 0.0},
            "resources": {"groups": {"api": {"cpu_cores": api}, "postgres": {"cpu_cores": 1.25}}},
            "generator": {"busiest_process_cores": gen, "saturated": gen > 0.9},
        }

    steps = [step(80, 40.0, 0.5, 0.3), step(160, 90.0, 0.9, 0.95), step(320, 450.0, 1.2, 0.5)]
    section: LoadTestResult = {
        "parameters": {"slo_p95_ms": 200.0},
        "configurations": {
            "both": {
                "closed": steps[0],
                "steps": steps,
                "users_supported": users_supported(steps, 200.0),
                "open": {"late": 0, "dropped": 0, "latency": {"overall": {"n": 40, "p99_ms": 12.5}}},
            }
        },
        "table": [],
        "started_at": 0.0,
        "seconds": 1.0,
        "fingerprint": None,
        "method": "a synthetic load test",
    }
    tables, notes = load_tables(section)
    assert notes == ["Load test: a synthetic load test"]
    per_config = next(t for t in tables if t.title.startswith("Per configuration"))
    assert per_config.rows[0][9] == "12.50" and per_config.rows[0][8] == "160 (160–320)"  # and its bracket
    steps = next(t for t in tables if t.title.startswith("Step load"))
    assert [r[1] for r in steps.rows] == [80, 160, 320]
    limits = ["–", "generator (saturated)", "system under test (p95 > 200 ms); busiest: PostgreSQL"]
    assert [r[-1] for r in steps.rows] == limits
    assert steps.rows[1][6:9] == ["0.90", "1.25", "0.95"]


def test_a_recommended_set_measured_slower_is_explained_by_its_plans() -> None:
    """Same plan on both sets: the gap is the run's; a plan that lost an index: that index is named."""
    from psra_bench.report.summary import recommendations

    def vs(ratio: float) -> dict[str, Any]:
        return {"ratio": ratio, "ratio_ci": [ratio * 0.95, ratio * 1.05], "p_value": 0.0004, "verdict": "slower"}

    undecided = {"name": "q", "verdict": "no change", "decision": {"ratio_ci": [0.95, 1.05]}}
    section = {
        "audit": [
            {"index": "idx_gone", "new": True, "recommendation": "review", "size_bytes": 2**20},
            {"index": "idx_unused", "new": True, "recommendation": "drop", "size_bytes": 2**20},
        ],
        "queries": {
            "recent_verdicts": {"plans": {"after": {"index_names": ["idx_a"]}}, **undecided},
            "trade_route_report": {"plans": {"after": {"index_names": ["idx_a", "idx_gone"]}}, **undecided},
        },
        "recommended": {
            "queries": {
                q: {"as_fast_as_spec": False, "recommended_vs_spec": vs(r), "plan_recommended": ["idx_a"]}
                for q, r in (("recent_verdicts", 1.2), ("trade_route_report", 1.5))
            },
            "write": None,
        },
    }  # fmt: skip
    advice = recommendations({"query_latency": section})
    open_ = advice["open"]
    # the index whose loss slowed a query is not advised away, and the MB are those of the measured set
    assert "leaves out 2 migration indexes" in advice["do"][0] and "2.00 MB" in advice["do"][0]
    assert "drop them except idx_gone (trade_route_report needs it)" in advice["do"][0]
    recent = next(t for t in open_ if "for recent_verdicts" in t)
    report = next(t for t in open_ if "for trade_route_report" in t)
    assert "same indexes on both sets" in recent and "0.83×" in recent and "p < 0.001" in recent
    assert "uses idx_gone, which the measured recommended set left out: recommended_indexes.up.sql keeps it" in report
    assert any("notebook 03 did not run" in t for t in open_)
