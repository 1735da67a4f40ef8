"""benchmarks/bench_api.py runs end to end (both load generators) and refuses bad variants in one sentence.

Only that it runs and what it prints are checked: its ratios are measurements, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_api.py"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=dict(os.environ))  # fmt: skip


@pytest.mark.parametrize("client", ["asyncio", "wrk"])
def test_bench_api_measures_our_api_beside_the_minimal_app(client: str, tmp_path: Path) -> None:
    if client == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk); the asyncio client stands in")
    out = tmp_path / "bench.json"
    done = _run("--rounds", "1", "--seconds", "0.5", "--concurrency", "2", "--rate", "20", "--rate-seconds", "0.5",
                "--client", client, "--json", str(out), "--variant", f"again={ROOT},loop=asyncio,http=h11")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for lookup in ("hs", "rule", "assessment"):
        assert f"\n{lookup}, c=2:" in done.stdout
    assert done.stdout.count("ratio ") == 6  # api and again, for each of the three lookups
    doc = json.loads(out.read_text())
    cells = doc["throughput"]
    assert {c["lookup"] for c in cells} == {"hs", "rule", "assessment"}
    for cell in cells:
        assert set(cell["rounds"]) == {"api", "again", "minimal"}
        for rows in cell["rounds"].values():
            assert rows[0]["requests"] > 0 and rows[0]["non_200"] == 0 and rows[0]["generator_cores"] >= 0
    assert {r["side"] for r in doc["fixed_rate"]} == {"api", "again", "minimal"}
    assert all(r["n"] == 10 for r in doc["fixed_rate"])


@pytest.mark.parametrize(
    "variant", ["minimal=/tmp", "x=/nonexistent", f"x={ROOT},workers=0", f"x={ROOT},loop=trio", "=/tmp"]
)
def test_bench_api_refuses_a_bad_variant_in_one_sentence(variant: str) -> None:
    done = _run("--variant", variant, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variant in lines[0], done.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--rate", "0"), "--rate 0: use a number > 0"),
        (("--seconds", "-1"), "--seconds -1: use a number > 0"),
        (("--rounds", "0"), "--rounds 0: use a whole number >= 1"),
        (("--concurrency", "8,x"), "--concurrency '8,x': use comma-separated whole numbers >= 1"),
    ],
)
def test_bad_flags_get_one_sentence_before_any_server_starts(flags: tuple[str, ...], said: str) -> None:
    done = _run(*flags, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and said in done.stderr
