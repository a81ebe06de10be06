"""The smoke study's report renders in headless Chromium with no console errors."""

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)"),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium(tmp_path, *args):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_renders_without_console_errors_and_fits_1280_px(smoke_run, tmp_path):
    page = (smoke_run / "report" / "index.html").as_uri()
    proc = _chromium(
        tmp_path, "--window-size=1280,800", "--virtual-time-budget=3000", "--dump-dom", page
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    console_lines = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console_lines, console_lines
    assert "<table" in dom and "Recommendation" in dom and "<details>" in dom
    assert dom.index("Recommendation") < dom.index("<details>")  # the answer comes first
    assert dom.count('src="data:image/png;base64,') >= 3  # figures are embedded
    # the sort script ran without error: clicking is not possible here, but the table is sortable
    assert 'class="sortable"' in dom
    # nothing sticks out sideways at 1280 px: the page measured itself after loading
    scroll = int(re.search(r'data-scroll-width="(\d+)"', dom).group(1))
    client = int(re.search(r'data-client-width="(\d+)"', dom).group(1))
    assert 1200 <= client <= 1280 and scroll <= client, (scroll, client)

    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page)
    assert shot.exists() and shot.stat().st_size > 10_000
