"""The smoke study's report renders in headless Chromium with no console errors."""

import re
import shutil
import subprocess

import pytest
from PIL import Image

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


def test_inside_the_model_section_fits_1280_px_and_its_figures_load(tmp_path_factory, tmp_path):
    from insidedata import inside_report

    page = inside_report(tmp_path_factory).report.as_uri()
    proc = _chromium(
        tmp_path, "--window-size=1280,800", "--virtual-time-budget=3000", "--dump-dom", page
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert not [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert re.search(r"<h2>Inside the model: xception-f8-bn-e2</h2>", dom)
    html_tag = re.search(r"<html[^>]*>", dom).group(0)  # where the page wrote its measures
    measured = dict(re.findall(r'data-([a-z-]+)="(\d+)"', html_tag))
    assert int(measured["scroll-width"]) <= int(measured["client-width"]) <= 1280, measured
    assert measured["broken-images"] == "0"  # every figure decoded (naturalWidth > 0)
    assert measured["wide-tables"] == "0"  # the section's tables fit without scrolling sideways
    section = dom[dom.index('<section id="inside">') : dom.index("</section>")]
    assert section.count('src="data:image/png;base64,') == 2

    # the whole page at 1280 px, then the section cut out of it
    shot = tmp_path / "report.png"
    height = int(measured["scroll-height"])
    _chromium(tmp_path, f"--window-size=1280,{height}", f"--screenshot={shot}", page)
    top = int(float(re.search(r'data-section-tops="([\d.]+)', html_tag).group(1)))
    with Image.open(shot) as image:
        assert image.size == (1280, height)
        image.crop((0, top, 1280, min(top + 2400, height))).save(tmp_path / "inside.png")
    assert (tmp_path / "inside.png").stat().st_size > 10_000
