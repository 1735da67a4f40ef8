"""Notebook 03's sliders: "auto" decided right, and rendered and redrawn in a real JupyterLab + headless Chromium.

The browser test starts its own JupyterLab (free port, token, a temporary root folder holding an
unchanged copy of notebook 03, Jupyter/IPython state folders of its own) with the environment that
points the notebook at the test servers, runs every cell from the Run menu, and moves a slider with
the keyboard. It waits for states (selectors, texts, kernel idle), never for a fixed time, and
stops the server and its kernel at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from helpers import chromium_path

from psra_bench.cachesim.explorer import NBVAL_ENV, papermill_injected, resolve_interactive
from psra_bench.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "03_ttl_tuning.ipynb"
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds: JupyterLab start, the whole notebook (seeding + a small live replay on 2 shared cores), one redraw.
SERVER_DEADLINE_S = 120
RUN_ALL_DEADLINE_S = 420
REDRAW_DEADLINE_S = 60


# --------------------------------------------------------------------------- "auto"


@pytest.mark.parametrize(
    ("interactive", "environ", "inputs", "enabled", "why"),
    [
        (None, {}, ["", "import os"], True, "live kernel"),
        (None, {NBVAL_ENV: "notebooks/03_ttl_tuning.ipynb::Cell 0 (setup)"}, [""], False, "nbval"),
        (None, {}, ["", "# Parameters\nrequests = 1000\n", "x = 1"], False, "papermill"),
        (None, {}, ["", "  # Parameters\n"], False, "papermill"),
        (None, {}, ["", "# Parameters of my own, typed in JupyterLab\nx = 1"], True, "live kernel"),
        (True, {NBVAL_ENV: "x"}, ["# Parameters\n"], True, "interactive = True"),
        (False, {}, [""], False, "interactive = False"),
    ],
)
def test_auto_interactive_is_off_under_nbval_and_papermill_only(
    interactive: bool | None, environ: dict[str, str], inputs: list[str], enabled: bool, why: str
) -> None:
    mode = resolve_interactive(interactive, environ, inputs)
    assert mode.enabled is enabled
    assert why in mode.reason


def test_papermill_marker_is_the_first_line_only() -> None:
    assert papermill_injected("# Parameters\nverdicts = 5\n")
    assert not papermill_injected("verdicts = 5\n# Parameters\n")
    assert not papermill_injected("")


def _probe_notebook(path: Path) -> None:
    """A notebook with a parameters cell and a cell that writes what "auto" decided to ``mode.json``."""
    source = textwrap.dedent(
        """\
        import json, os
        from psra_bench.cachesim.explorer import resolve_interactive
        mode = resolve_interactive(interactive, os.environ, In)
        with open("mode.json", "w") as fh:
            json.dump({"enabled": mode.enabled, "reason": mode.reason}, fh)
        assert mode.enabled is expected, mode"""
    )
    cells = [
        nbformat.v4.new_code_cell(
            "interactive = None\nexpected = True\nrequests = 10", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(source),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _env_outside_pytest() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != NBVAL_ENV}


@pytest.mark.timeout(180)
def test_papermill_run_skips_the_sliders_by_itself(tmp_path: Path) -> None:
    """Real papermill CLI, outside pytest's environment: the injected cell alone turns "auto" off."""
    _probe_notebook(tmp_path / "probe.ipynb")
    proc = subprocess.run(
        [str(BIN / "papermill"), "probe.ipynb", "out.ipynb", "-p", "requests", "20", "-p", "expected", "False"],
        cwd=tmp_path,
        env=_env_outside_pytest(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "mode.json").read_text())["reason"] == "auto: papermill injected the parameters"


@pytest.mark.timeout(180)
def test_nbval_run_skips_the_sliders_by_itself(tmp_path: Path) -> None:
    """Real pytest + nbval in a subprocess started without PYTEST_CURRENT_TEST: nbval's kernel gets it from pytest."""
    _probe_notebook(tmp_path / "probe.ipynb")
    nb = nbformat.read(tmp_path / "probe.ipynb", as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("expected = True", "expected = False")
    nbformat.write(nb, tmp_path / "probe.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
        + ["--nbval-lax", "-q", "probe.ipynb"],
        cwd=tmp_path,
        env=_env_outside_pytest(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "pytest/nbval" in json.loads((tmp_path / "mode.json").read_text())["reason"]


# --------------------------------------------------------------------------- JupyterLab


def _get(url: str, token: str) -> tuple[int, Any]:
    """HTTP status and JSON body of a GET with the token (0, None when the server does not answer)."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass
class Lab:
    """A JupyterLab server this test started, and the processes it spawned (its kernels)."""

    proc: subprocess.Popen[bytes]
    token: str
    runtime_dir: Path
    log: Path
    url: str = ""
    children: list[psutil.Process] = field(default_factory=list)

    def wait_ready(self) -> None:
        """Wait until the server wrote its runtime file (the port it bound) and answers /api/status."""
        deadline = time.monotonic() + SERVER_DEADLINE_S
        info = self.runtime_dir / f"jpserver-{self.proc.pid}.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if not self.url and info.exists():
                try:
                    self.url = json.loads(info.read_text())["url"].rstrip("/")
                except (ValueError, KeyError):
                    pass  # the file is being written; read it again
            if self.url and _get(f"{self.url}/api/status", self.token)[0] == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"JupyterLab did not answer within {SERVER_DEADLINE_S} s: {self.log.read_text()[-3000:]}")

    def wait_kernel_idle(self) -> None:
        """Wait until the server has a notebook session whose kernel is idle (started and connected)."""
        deadline = time.monotonic() + SERVER_DEADLINE_S
        while time.monotonic() < deadline:
            status, sessions = _get(f"{self.url}/api/sessions", self.token)
            if status == 200 and any(s["kernel"]["execution_state"] == "idle" for s in sessions or []):
                return
            time.sleep(0.2)
        pytest.fail(f"no idle kernel within {SERVER_DEADLINE_S} s: {self.log.read_text()[-3000:]}")

    def note_children(self) -> None:
        """Remember the server's child processes (kernels) so that stopping can check they are gone."""
        if self.proc.poll() is not None:
            return  # exited (and reaped): its pid may belong to another process by now
        try:
            self.children += [
                p for p in psutil.Process(self.proc.pid).children(recursive=True) if p not in self.children
            ]
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> list[psutil.Process]:
        """Ask the server to shut down (it stops its kernels), then end what is left; return survivors."""
        self.note_children()
        if self.proc.poll() is None and self.url:
            request = urllib.request.Request(
                f"{self.url}/api/shutdown", method="POST", headers={"Authorization": f"token {self.token}"}
            )
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except OSError:
                pass  # the server may close the connection while it stops
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(self.children, timeout=15)
        for p in alive:
            p.kill()
        return alive


def _lab_env(settings: Settings, tmp: Path) -> dict[str, str]:
    """The environment of an engineer's JupyterLab pointed at the test servers, with its own state folders."""
    assert settings.db_dsn is not None and settings.redis is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSRA_", "REDIS_", "JUPYTER", "PYTEST_"))}
    env.update(
        {
            "PSRA_DB_DSN": settings.db_dsn,
            "REDIS_URL": settings.redis.url(),
            "JOBS_REDIS_URL": (settings.jobs_redis or settings.redis).url(),
            "PSRA_CACHE_NAMESPACE": settings.cache_namespace + "browser:",
            "PSRA_BENCH_HOME": str(tmp / "home"),
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter" / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "jupyter" / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter" / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "jupyter" / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "jupyter" / "workspaces"),
            "IPYTHONDIR": str(tmp / "ipython"),
        }
    )
    return env


def _lab_settings(settings_dir: Path) -> None:
    """No news or update checks (no network), and every cell attached to the page (no windowing)."""
    for name, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings_dir / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def jupyterlab(settings: Settings, tmp_path: Path) -> Iterator[Lab]:
    """A JupyterLab on a free port with a token, serving a folder with an unchanged copy of notebook 03."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(NOTEBOOK, root / NOTEBOOK.name)
    env = _lab_env(settings, tmp_path)
    _lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", "--port=0"]
            + [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
            # No calls to PyPI from the extension manager; root in CI containers.
            + ["--LabApp.extension_manager=readonly"]
            + (["--allow-root"] if os.geteuid() == 0 else []),
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lab = Lab(proc, token, Path(env["JUPYTER_RUNTIME_DIR"]), log)
    try:
        lab.wait_ready()
        yield lab
    finally:
        lab.stop()


_STATE_JS = """() => {
  const out = [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.innerText).join('\\n');
  const busy = [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.innerText.includes('*'));
  return {
    sliders: document.querySelectorAll('.jp-OutputArea .widget-slider').length,
    error: /Traceback|Error:/.test(out) ? out.slice(-3000) : null,
    busy: busy,
    status: document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status'),
  };
}"""


def _wait_for(page: Any, js: str, arg: Any, deadline_s: float) -> Any:
    """Poll ``js`` in the page until it returns a truthy value or the deadline passes (then TimeoutError)."""
    return page.wait_for_function(js, arg=arg, polling=250, timeout=deadline_s * 1000).json_value()


@pytest.mark.slow
@pytest.mark.timeout(RUN_ALL_DEADLINE_S + SERVER_DEADLINE_S + 180)
def test_notebook_03_sliders_render_and_redraw_in_jupyterlab(jupyterlab: Lab, tmp_path: Path) -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("no Chromium found (/usr/bin/chromium or chromium on PATH): apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{jupyterlab.url}/lab/tree/{NOTEBOOK.name}?token={jupyterlab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=SERVER_DEADLINE_S * 1000)
            jupyterlab.wait_kernel_idle()
            page.wait_for_selector(
                '.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=SERVER_DEADLINE_S * 1000
            )
            jupyterlab.note_children()
            assert jupyterlab.children, "the notebook's kernel runs as a child of our JupyterLab"

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
            state = _wait_for(
                page,
                f"() => {{ const s = ({_STATE_JS})(); return (s.error || (s.sliders >= 5 && !s.busy)) ? s : null; }}",
                None,
                RUN_ALL_DEADLINE_S,
            )
            assert state["error"] is None, f"a cell failed:\n{state['error']}"
            assert state["sliders"] >= 5
            output = page.locator(".jp-OutputArea .widget-output").last
            _wait_for(page, "(el) => el.innerText.includes('hit rate')", output.element_handle(), REDRAW_DEADLINE_S)
            assert output.locator("img").count() == 1, "the explorer draws its bar chart"

            # The rules TTL slider (second): one step right with the keyboard redraws the output for that TTL.
            slider = page.locator(".jp-OutputArea .widget-slider").nth(1)
            slider.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "notebook03_sliders.png"), full_page=False)
            before = slider.locator(".widget-readout").inner_text().strip()
            before_text = output.inner_text()
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            after = _wait_for(
                page,
                "([el, old]) => { const t = el.querySelector('.widget-readout').innerText.trim(); "
                "return t !== old ? t : null; }",
                [slider.element_handle(), before],
                REDRAW_DEADLINE_S,
            )
            expected = f"TTL {float(after):>6g} s"
            _wait_for(
                page,
                "([el, old, want]) => el.innerText !== old && el.innerText.includes(want)",
                [output.element_handle(), before_text, expected],
                REDRAW_DEADLINE_S,
            )
            assert float(after) > float(before)
            assert expected in output.inner_text() and expected not in before_text
            page.screenshot(path=str(tmp_path / "notebook03_moved.png"), full_page=False)
        finally:
            browser.close()
    print(f"browser test: Run All to redraw in {time.monotonic() - started:.1f} s")
    survivors = jupyterlab.stop()
    assert jupyterlab.proc.returncode is not None and not survivors, "JupyterLab and its kernel are stopped"
    assert not [p for p in jupyterlab.children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
