"""`aecli report` (aecli/report.py): a real sweep through the CLI writes its report; the page is self-contained
(every image inlined, no external reference) and renders in a real browser (Debian's chromium, headless): the
table, the plots and the image grids are there, the table sorts on a click, and nothing is fetched."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aecli import report, rundir
from aecli.errors import AecliError
from aecli.report import report_command
from conftest import run_cli, tiny_overrides

FAST_EVAL = {"eval.at_end": "true", "eval.test_images": 1000, "eval.probe_train_images": 1000,
             "eval.jacobian_images": 50, "eval.iw_samples": 100, "eval.iw_images": 40, "eval.mmd_images": 500,
             "eval.frechet_images": 1000, "eval.label_samples": 20}
LAMBDAS = ["0.01", "1", "100"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs "
                                    "it: apt-get install chromium), so the page cannot be opened in a browser")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root) -> tuple[Path, str]:
    """Three tiny ae runs, lambda = 0.01, 1, 100, each evaluated at the end: the sweep folder and the CLI's output."""
    cwd = tmp_path_factory.mktemp("report")
    out = cwd / "sweep"
    proc = run_cli("train", "-m", *tiny_overrides(data_root, epochs=2, model="ae", **FAST_EVAL),
                   f"lambda={','.join(LAMBDAS)}", f"hydra.sweep.dir={out}", cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


class Page(HTMLParser):
    """What the page (or chromium's DOM of it) holds: the rows of the runs table's body, every <img> src, every
    href, and the text of the element with id `probe` (written by a test's script)."""

    def __init__(self, text: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.probe = ""
        self._runs = self._table = self._row = self._cell = self._in_probe = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tbody" and self._runs:
            self._table = True
        elif tag == "table" and "runs" in (a.get("class") or ""):
            self._runs = True
        elif tag == "tr" and self._table:
            self._row = True
            self.rows.append([])
        elif tag == "td" and self._row:
            self._cell = True
            self.rows[-1].append("")
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif a.get("id") == "probe":
            self._in_probe = True
        if "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("tbody", "table"):
            self._table = self._runs = False
        elif tag == "td":
            self._cell = False
        elif tag == "pre":
            self._in_probe = False

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][-1] += data
        if self._in_probe:
            self.probe += data


def external_references(text: str) -> list[str]:
    """Every address the page could fetch: src/href/action attributes and CSS url()s that are not data: URIs or
    in-page anchors, and any @import."""
    found = re.findall(r"""(?:src|href|action|srcset)\s*=\s*["']?([^"'\s>]+)""", text, re.I)
    found += re.findall(r"""url\(\s*["']?([^"')]+)""", text, re.I)
    found += re.findall(r"@import", text)
    return [f for f in found if not f.startswith(("data:", "#"))]


def chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium on `url`, its profile in tmp_path, every proxy pointing at a closed port, so any
    request for another page would fail."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--proxy-server=http://127.0.0.1:9", f"--user-data-dir={tmp_path / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


# -- the sweep writes it ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_ends_by_writing_its_report(sweep):
    out, stdout = sweep
    assert f"report: {out / 'report.html'}" in stdout
    page = Page((out / "report.html").read_text())
    assert len(page.rows) == 3


def expected_images(sweep_dir) -> int:
    return sum(2 + len(list((sweep_dir / job / "plots").glob("*.png"))) for job in ("0", "1", "2")) + 2


@pytest.mark.slow
def test_report_is_self_contained(sweep, tmp_path):
    out, _ = sweep
    path = report_command([str(out)], out=str(tmp_path / "r.html"))
    assert path == tmp_path / "r.html"
    text = path.read_text()
    assert external_references(text) == [] and "http://" not in text and "https://" not in text
    page = Page(text)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    # per run: the newest recon and sample grids and every picture in plots/ (the code scatter, the loss curves, the
    # filters of an mlp); then the two kinds of plot
    assert len(page.images) == expected_images(out)
    assert all(link.startswith("#run-") for link in page.links)
    for job in ("0", "1", "2"):
        recon = (out / job / "images" / "recon_epoch_002.png").read_bytes()
        assert report.data_uri(recon) in page.images  # the newest epoch's grid, byte for byte
    # the table: a row per run with the swept lambda, the floors said once beside the numbers
    assert sorted(re.search(r"lambda=(\S+)", " ".join(r)).group(1) for r in page.rows) == sorted(LAMBDAS)
    evaluation = json.loads((out / "0" / "eval.json").read_text())
    assert f"pixel_probe_acc {report.fmt(evaluation['pixel_probe_acc'])}" in html.unescape(text)
    assert "frechet_floor" in text and "against lambda" in text and "learning curves" in text


# -- in a real browser --------------------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_report_renders_in_a_browser(sweep, tmp_path):
    """The screenshot is a picture, not a blank page; the DOM has the table rows and every image decoded."""
    from PIL import Image

    out, _ = sweep
    source = (out / "report.html").read_text()
    probe = """<pre id="probe"></pre><script>
      window.addEventListener("load", () => {
        const imgs = [...document.images];
        document.querySelector("table.runs th:nth-child(3)").click();  // sort by optimized, ascending
        document.getElementById("probe").textContent = JSON.stringify({
          images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          sorted: [...document.querySelectorAll("table.runs tbody tr")].map(r => r.cells[2].dataset.v),
          page_fits: document.documentElement.scrollWidth <= window.innerWidth,
          table_fits: [...document.querySelectorAll("div.scroll")].every(d => d.scrollWidth <= d.clientWidth)});
      });</script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(source.replace("</body>", probe))

    shot = tmp_path / "shot.png"
    proc = chromium(out.joinpath("report.html").as_uri(), tmp_path, f"--screenshot={shot}",
                    "--window-size=1400,3000")
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)  # (count, colour) of every colour in the screenshot
    white = sum(n for n, c in colours if c == (255, 255, 255))
    inked = 1 - white / (image.width * image.height)
    assert len(colours) > 500 and inked > 0.05, (len(colours), inked)  # plots and digits, not a white page

    proc = chromium(probed.as_uri(), tmp_path, "--dump-dom", "--virtual-time-budget=5000", "--window-size=1400,3000")
    dom = Page(proc.stdout)
    assert len(dom.rows) == 3 and all(src.startswith("data:image/png") for src in dom.images), proc.stderr[-2000:]
    result = json.loads(dom.probe)
    assert result["images"] == result["decoded"] == len(dom.images) == expected_images(out)
    values = [float(v) for v in result["sorted"]]
    assert values == sorted(values)  # the click sorted the table
    assert result["page_fits"] and result["table_fits"], result  # nothing scrolls sideways at 1400 px
    phone = chromium(probed.as_uri(), tmp_path, "--dump-dom", "--virtual-time-budget=5000", "--window-size=390,844")
    assert json.loads(Page(phone.stdout).probe)["page_fits"]  # on a phone only the table scrolls, not the page


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(AecliError, match="report: .*missing is not a folder"):
        report_command([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AecliError, match="report: no run folders"):
        report_command([str(tmp_path / "empty")])
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,val_loss,val_recon\n1,5.0,4.0\n")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AecliError, match=r"report: cannot write out=.*a-file/r.html"):
        report_command([str(run)], out=str(tmp_path / "a-file" / "r.html"))
    with pytest.raises(AecliError, match="is a folder"):
        report_command([str(run)], out=str(tmp_path))
    with pytest.raises(AecliError, match="give run folders"):
        report_command([])
    assert report_command([str(run)]) == run / "report.html"  # one run: the page goes into its folder


def test_settings_plots_one_line_per_model_and_log_axes(monkeypatch):
    """Two models over lambda 0, 0.1, 10: one line per model on a symlog axis (lambda spans decades and has 0)."""
    rows, settings = [], []
    for model in ("ae", "cae"):
        for lam in ("0", "0.1", "10"):
            rows.append({"run": f"{model}{lam}", "val_recon": 100.0 + float(lam), "test_probe_acc": 0.5,
                         "optimized_metric": "val_recon"})
            settings.append({"model": model, "lambda": lam})
    drawn = []
    real = report.png_bytes
    monkeypatch.setattr(report, "png_bytes", lambda fig: drawn.append(fig) or real(fig))
    figures = report.setting_plots(rows, settings)
    assert [title for title, _ in figures] == ["val_recon, test_probe_acc against lambda"]
    axes = drawn[0].axes
    assert [line.get_label() for line in axes[0].get_lines()] == ["model=ae", "model=cae"]
    assert axes[0].get_xscale() == "symlog" and axes[0].get_yscale() == "linear"
    # each line in the same colour in every panel
    assert [line.get_color() for line in axes[0].get_lines()] == [line.get_color() for line in axes[1].get_lines()]


def test_learning_curves_one_panel_per_data_set_one_colour_per_run_whole_epochs(tmp_path, monkeypatch):
    """Runs of MNIST and Fashion-MNIST are drawn on two panels (one "epochs" axis mixed them), each run in its own
    colour, and a 2-epoch curve has ticks at whole epochs only (1.0, 1.2, ... before)."""
    from test_runtable import make_run

    runs = [make_run(tmp_path / str(i), [f"lambda={i}"], [90.0 - i, 80.0 - i], data=data)
            for i, data in enumerate(("mnist", "fashion_mnist", "mnist"))]
    records = [rundir.read_run(run) for run in runs]
    rows = [report.row_of(record, record.path.name) for record in records]
    drawn = []
    real = report.png_bytes
    monkeypatch.setattr(report, "png_bytes", lambda fig: drawn.append(fig) or real(fig))
    (title, _), = report.curves_plots(rows, records)
    assert "one panel per data set" in title
    mnist, fashion = drawn[0].axes
    assert [ax.get_title() for ax in (mnist, fashion)] == ["data=mnist", "data=fashion_mnist"]
    assert [line.get_label() for line in mnist.get_lines()] == ["0", "2"]
    colours = [line.get_color() for ax in (mnist, fashion) for line in ax.get_lines()]
    assert len(set(map(str, colours))) == 3
    ticks = [t for t in mnist.get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_the_table_leaves_bookkeeping_to_each_run_and_names_skipped_metrics(tmp_path):
    """test_images, iw_images, iw_samples and iw_seconds are not compared: they are in each run's protocol line,
    not table columns (they made the table scroll at 1400 px); whole numbers print whole (10000, not 1e+04);
    metrics eval skipped for lack of labels are said."""
    from test_runtable import make_run

    evaluation = {"recon_bce": 80.0, "iw_bound": -95.0, "elbo": -97.0, "iw_images": 10000, "iw_samples": 5000,
                  "iw_seconds": 12.5, "test_images": 10000, "model": "vae",
                  "skipped": {"probe_acc": "the data set faces has no labels"}}
    run = make_run(tmp_path / "run", ["lr=0.1"], [90.0], evaluation=evaluation)
    text = html.unescape(report_command([str(run)]).read_text())
    head = text[text.index("<thead>"):text.index("</thead>")]
    assert "iw_bound" in head and not any(k in head for k in ("test_images", "iw_images", "iw_samples", "iw_seconds"))
    assert "iw_images: 10000" in text and "test_images: 10000" in text and "1e+04" not in text
    assert "probe_acc (the data set faces has no labels)" in text


def test_sweep_summary_writes_the_report_unless_report_false(tmp_path, capsys):
    from omegaconf import OmegaConf

    from aecli.sweep import SweepSummary

    run = tmp_path / "sweep" / "0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,val_loss,val_recon\n1,5.0,4.0\n2,3.0,2.5\n")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}, "report": False})
    SweepSummary().on_multirun_end(config)
    assert not (tmp_path / "sweep" / "report.html").exists() and "report:" not in capsys.readouterr().out
    config.report = True
    SweepSummary().on_multirun_end(config)
    assert f"report: {tmp_path / 'sweep' / 'report.html'}" in capsys.readouterr().out
    assert (tmp_path / "sweep" / "report.html").is_file()
