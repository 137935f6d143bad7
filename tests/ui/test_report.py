"""`hvmem report` and `hvmem plot` over real results: what the file holds, the errors,
and the report as a real browser shows it.

One short demo run (its first two minutes) is written once per module through
`hvmem run --report`. Headless chromium then draws its report from disk with the
network off: the DOM it built must hold every chart as an SVG (the report's own
script counts them into ``data-charts``), its console must stay silent (no script
error, nothing it failed to load), and a screenshot must show a page, not a blank
one. Those two tests are integration tests: skipped, with the reason, where chromium
is missing; ``.ci/run`` installs Debian's ``chromium``, and there
(``HVMEM_REQUIRE_INTEGRATION=1``) such a skip fails the run (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hvmem.scenarios import builtin_scenario_path
from hvmem.ui.cli import app
from hvmem.ui.report_charts import CHARTS, COMPOSITION, composition_layers
from hvmem.ui.report_data import load_run

runner = CliRunner()

#: Every chart's section id in a report.
CHART_IDS = [f"chart-{key}" for key in CHARTS]


def short_demo(tmp: Path, duration: str = "2min") -> Path:
    """The demo scenario cut to its first ``duration``, as a file."""
    text = builtin_scenario_path("demo").read_text()
    text, n = re.subn(r'^duration = "8min"', f'duration = "{duration}"', text, flags=re.M)
    assert n == 1
    path = tmp / "demo-short.toml"
    path.write_text(text)
    return path


def run_with_report(tmp: Path) -> tuple[Path, str]:
    """``hvmem run`` of the short demo with --report: (results directory, output)."""
    out = tmp / "results"
    done = runner.invoke(app, ["run", str(short_demo(tmp)), "--out", str(out), "--no-live",
                               "--report"])
    assert done.exit_code == 0, done.output
    return out, done.output


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory) -> tuple[Path, str]:
    return run_with_report(tmp_path_factory.mktemp("report"))


def test_run_writes_and_names_its_report(demo_results):
    results, output = demo_results
    report = results / "report.html"
    assert report.is_file()
    assert output.strip().splitlines()[-1] == f"report: {report}"


def test_report_is_self_contained_and_has_every_part(demo_results):
    page = (demo_results[0] / "report.html").read_text()
    # Nothing fetched: no external scripts, styles, images or fonts.
    assert not re.search(r"<script[^>]+src=|<link\b|<img\b|@import|url\(\s*['\"]?http", page)
    assert not re.search(r"(src|href)=['\"]https?:", page)
    for chart in CHART_IDS:
        section = re.search(rf"<section class='chart' id='{chart}'>(.*?)</section>", page, re.S)
        assert section, chart
        assert section.group(1).count("<svg") == 1, chart
    for table in ("what each mechanism reclaimed", "what it cost each VM"):
        assert table in page
    assert "host memory states: high" in page
    assert "&quot;name&quot;: &quot;demo&quot;" in page  # the effective scenario
    assert "power_on" in page  # the events
    for vm in ("web", "db", "batch"):
        assert vm in page
    assert len(page) < 3_000_000


def test_report_of_several_directories_side_by_side(demo_results, tmp_path):
    # A list of directories, one of them a folder of runs (a sweep's) standing for its runs.
    results = demo_results[0]
    sweep = tmp_path / "sweep"
    for name in ("b-run", "a-run"):
        shutil.copytree(results, sweep / name)
    out = tmp_path / "all.html"
    done = runner.invoke(app, ["report", str(results), str(sweep), "--out", str(out)])
    assert done.exit_code == 0, done.output
    page = out.read_text()
    assert "summary metrics side by side" in page
    host = re.search(r"id='chart-host'>(.*?)</section>", page, re.S).group(1)
    # One column per run, titled, in the order given and then by name.
    assert host.index(">results<") < host.index(">a-run<") < host.index(">b-run<")
    assert page.count("<svg") == len(CHARTS)


def test_composition_adds_up_to_configured_memory(demo_results):
    run = load_run(demo_results[0])
    for cols in run.vms.values():
        layers = composition_layers(cols)
        assert list(layers) == list(COMPOSITION)
        assert all((values >= 0).all() for values in layers.values())
        np.testing.assert_allclose(sum(layers.values()), cols["MEMSZ"], atol=1e-6)


def test_compare_writes_a_report_of_its_runs(tmp_path):
    scenario = tmp_path / "small.toml"
    scenario.write_text('duration = "20s"\n[host]\nmemory = "256MiB"\n'
                        '[[vm]]\nname = "vm"\nmemory = "128MiB"\n')
    out = tmp_path / "sub" / "compare.html"
    done = runner.invoke(app, ["compare", str(scenario), "--policies", "esx,static",
                               "--report", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[-1] == f"report: {out}"
    page = out.read_text()
    assert "summary metrics side by side" in page and ">static<" in page


def test_report_of_what_is_not_results_is_one_line(tmp_path):
    done = runner.invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 1
    assert done.output.strip() == f"hvmem: error: {tmp_path}: not a results directory " \
                                  "(no summary.json)"


def png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_plot_png_is_a_real_picture(demo_results, tmp_path):
    out = tmp_path / "balloon.png"
    done = runner.invoke(app, ["plot", str(demo_results[0]), "--metric", "GRANT",
                               "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    pixels = png_pixels(out)
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines, text: not one colour
    assert (pixels != 255).any(axis=2).mean() > 0.01


def test_plot_one_vm_as_svg_and_a_host_metric(demo_results, tmp_path):
    svg = tmp_path / "web.svg"
    done = runner.invoke(app, ["plot", str(demo_results[0]), "--metric", "SWR/s", "--vm", "web",
                               "--out", str(svg)])
    assert done.exit_code == 0, done.output
    assert "<svg" in svg.read_text()
    done = runner.invoke(app, ["plot", str(demo_results[0]), "--metric", "free_mib",
                               "--out", str(tmp_path / "free.pdf")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "free.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "BALLOON"], "--metric 'BALLOON': no such column in results; VM metrics: "
                              "MEMSZ, GRANT, SZTGT"),
    (["--metric", "MCTLSZ", "--vm", "nope"], "--vm 'nope': no such VM in results; VMs: "
                                             "web, db, batch"),
    (["--metric", "free_mib", "--vm", "web"], "free_mib is a host metric"),
])
def test_plot_errors_are_one_line_naming_what_exists(demo_results, tmp_path, args, message):
    done = runner.invoke(app, ["plot", str(demo_results[0]), *args,
                               "--out", str(tmp_path / "x.png")])
    assert done.exit_code == 1
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvmem: error: ")
    assert message in lines[0]
    if "--metric 'BALLOON'" in message:
        assert "host metrics: total_mib, free_mib, minfree_mib" in lines[0]


def test_plot_refuses_an_unknown_format(demo_results, tmp_path):
    done = runner.invoke(app, ["plot", str(demo_results[0]), "--metric", "GRANT",
                               "--out", str(tmp_path / "x.gif")])
    assert done.exit_code == 1
    assert "expected a .png, .svg or .pdf file" in done.output


# -- in a real browser ---------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)

#: The browser tests skip, with the reason, where chromium is missing.
needs_chromium = pytest.mark.skipif(
    BROWSER is None, reason="no chromium on the PATH; to run the report's browser tests: "
    "apt-get install chromium (as root), then make test")


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless chromium over ``page`` with no network; its console goes to stderr."""
    flags = ["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
             # Offline: any fetch the page tried would fail and show in the console.
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # chromium refuses to sandbox as root
    assert BROWSER is not None
    return subprocess.run([BROWSER, *flags, *args, page.as_uri()], capture_output=True,
                          text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(demo_results) -> Path:
    return demo_results[0] / "report.html"


@pytest.mark.integration
@needs_chromium
def test_chromium_builds_every_chart_and_logs_nothing(report, tmp_path):
    done = chromium(report, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert re.search(rf'<body[^>]*data-charts="{len(CHARTS)}"', dom), dom[:500]
    for key in CHARTS:
        assert re.search(rf"<section class=\"chart\" id=\"chart-{key}\">.*?<svg", dom, re.S), key
    assert console_lines(done.stderr) == []


@pytest.mark.integration
@needs_chromium
def test_chromium_screenshot_shows_the_report(report, tmp_path):
    shot = tmp_path / "report.png"
    done = chromium(report, tmp_path / "profile", f"--screenshot={shot}",
                    "--window-size=1280,2400")
    assert shot.is_file(), done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    pixels = png_pixels(shot)
    assert pixels.shape[:2] == (2400, 1280)
    inked = (pixels < 250).any(axis=2)
    assert inked.mean() > 0.05  # text, axes and filled areas, not a white page
    colours = np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # the state bands and the stacked memory are in colour


#: Appended to a copy of a report: the page's and each table's right edge, read by the test.
WIDTH_PROBE = """<script>window.addEventListener("load", () => {
  const right = [...document.querySelectorAll("table")].map(
    t => Math.round(t.getBoundingClientRect().right));
  document.body.dataset.widths = [document.documentElement.scrollWidth, ...right].join(" ");
});</script>"""


def page_widths(page: Path, tmp: Path, width_px: int) -> tuple[int, list[int]]:
    """The page's scroll width and each table's right edge in a ``width_px`` window."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", WIDTH_PROBE + "</body>"))
    done = chromium(probed, tmp / "profile", "--dump-dom", f"--window-size={width_px},1000",
                    "--virtual-time-budget=2000")
    found = re.search(r'data-widths="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    page_px, *tables = map(int, found.group(1).split())
    return page_px, tables


@pytest.mark.integration
@needs_chromium
@pytest.mark.parametrize("n_vms", [3, 32])
def test_the_report_fits_a_1280_px_window(demo_results, tmp_path, n_vms):
    """No table pushes the page sideways: a few VMs are columns, many scroll in their box."""
    import dataclasses

    from hvmem.ui.report import write_report

    run = load_run(demo_results[0])
    vms = run.summary["vms"]
    if n_vms > len(vms):  # the demo's VMs repeated, as a host of many VMs would list them
        many = {f"{name}{i}": vm for i in range(n_vms // len(vms) + 1) for name, vm in vms.items()}
        run = dataclasses.replace(run, summary={**run.summary,
                                                "vms": dict(list(many.items())[:n_vms])})
    page = write_report([run], tmp_path / "r.html")
    page_px, tables = page_widths(page, tmp_path, 1280)
    assert page_px == 1280
    if n_vms <= 8:
        assert max(tables) <= 1280, tables  # every table fits on the page
