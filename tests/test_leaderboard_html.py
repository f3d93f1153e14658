"""The HTML leaderboard (one self-contained page) and the CSV, from hand-written result files.

The structure is checked on the page as written (offline: no asset from the network, hover titles, the
paper's row, the backbone-level table, inline PNGs). The browser cases open it in headless Chromium:
`--dump-dom` after the scripts ran (DataTables initialised, titles set), and a small Chrome DevTools
Protocol client over `--remote-debugging-pipe` (no websocket, no driver, no port) that clicks a header,
types in the search box, records every request the page makes and takes a screenshot.
"""
from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import re
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from result_files import write_result

from scopebench.analyses import ReconstructionOutput
from scopebench.cli.main import main
from scopebench.results.html import render_html
from scopebench.results.leaderboard import build_frame, load_results

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"headless Chromium not found at {CHROMIUM}: install it to run the browser checks "
                                  "(Debian: apt-get install -y chromium chromium-driver; .ci/run does)")


def _png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# what the scope analyses store for the plots: Figure 6's histogram, Figure 7's curve, Figures 9-10's panels
FIGURE_DATA = {
    "cds": {"n_low": 3, "n_high": 4, "gamma": 0.15, "histogram": {"edges": [0.0, 0.1, 0.2, 0.3], "counts": [3, 1, 3]}},
    "awcds": {"curve": [{"bin": f"{lo}-{lo + 50}%", "pct_lo": lo, "pct_hi": lo + 50, "mean_awcds": 0.1 + lo / 1000,
                         "is_top": False} for lo in (0, 50)]
              + [{"bin": "top 1%", "pct_lo": 99.0, "pct_hi": 100.0, "mean_awcds": 0.4, "is_top": True}]},
    "feature_maps": {"view_tv_low": 0.1, "view_tv_high": 0.6, "panels": [
        {"group": group, "feature": feature, "cds": cds, "images": [0, 1],
         "maps": [[[0.0, 1.0], [2.0, 0.5]], [[1.0, 0.0], [0.0, 0.0]]], "thumbnails": [_png((200, 30, 30)), _png((0, 0, 0))]}
        for group, feature, cds in (("low", 4, 0.01), ("high", 9, 0.3))]},
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """dinov2-b (the paper reports Tables 6-8 for it): three SAEs and a backbone record; my-vit: one SAE."""
    folder = tmp_path / "results"
    folder.mkdir()
    for sae, fvu, l0, dead, held in (("topk", 0.05, 30.0, 2.0, True), ("relu", 0.08, 45.0, 20.0, True),
                                     ("jumprelu", 0.12, 25.0, 1.0, False)):
        scope = FIGURE_DATA if sae == "topk" else {}
        probes = {"removal_probes": {"cls_top1_original": 70.0, "cls_top1_high_removed": 70.5 - l0 / 100,
                                     "cls_top1_low_removed": 60.0}} if sae != "jumprelu" else {}
        write_result(folder, "dinov2-b", sae, {"reconstruction": {"fvu_a": fvu, "l0_a": l0, "dead_pct": dead},
                                               **scope, **probes},
                     {"table6.sparse": held, "table6.dense": True})
    write_result(folder, "dinov2-b", None, {"attention_emd": {"per_shift": {
        str(s): {"outlier": 7.0 - s, "non_outlier": 0.5 + 0.1 * s, "n_outlier": 3, "n_non_outlier": 30}
        for s in (1, 2, 3)}}})
    write_result(folder, "my-vit", "topk", {"reconstruction": {"fvu_a": 0.3, "l0_a": 31.0}})
    return folder


class Tables(HTMLParser):
    """Every <table> of a page: its id, the <h2> above it, header cells (text, title) and rows of cell texts.

    Text inside <sup> (itables' "static preview" marker in a header) and <script> is left out."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._section, self._cell, self._skip, self._in_h2 = "", None, 0, False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag in ("sup", "script"):
            self._skip += 1
        elif tag == "h2":
            self._in_h2, self._section = True, ""
        elif tag == "table":
            self.tables.append({"id": attrs.get("id"), "section": self._section, "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td") and self.tables:
            self._cell = [tag, attrs.get("title") or "", ""]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("sup", "script"):
            self._skip -= 1
        elif tag == "h2":
            self._in_h2 = False
        elif tag in ("th", "td") and self._cell is not None:
            kind, title, text = self._cell
            self._cell = None
            (self.tables[-1]["header"].append((text.strip(), title)) if kind == "th"
             else self.tables[-1]["rows"][-1].append(text.strip()))

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_h2:
            self._section += data
        if self._cell is not None:
            self._cell[2] += data

    def of(self, section: str, first_header: str) -> dict:
        """The table of ``section`` whose header starts with ``first_header`` (rows without cells dropped)."""
        table = next(t for t in self.tables if t["section"] == section and t["header"]
                     and t["header"][0][0] == first_header)
        return {**table, "rows": [row for row in table["rows"] if row]}


def _column(table: dict, name: str) -> list[str]:
    index = [text for text, _ in table["header"]].index(name)
    return [row[index] for row in table["rows"]]


@pytest.fixture
def page(results: Path) -> str:
    return render_html(load_results(results))


def test_no_asset_comes_from_the_network(page: str) -> None:
    assert "<link" not in page and "@import" not in page
    sources = re.findall(r"""\ssrc=["']?([^"'\s>]+)""", page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    # http(s) only in what itables shows without JavaScript: help links and the SVG namespaces of its logo
    for match in re.finditer(r"https?://", page):
        before = page[max(0, match.start() - 16):match.start()]
        assert before.endswith(("<a href=", 'xmlns="', 'xmlns:xlink="')), page[match.start() - 80:match.end() + 80]
    assert "dt_bundle" not in page  # DataTables' bundle is inlined, not named


def test_headers_carry_the_output_models_descriptions(page: str) -> None:
    titles = json.loads(re.search(r'<script type="application/json" id="column-titles">(.*?)</script>',
                                  page, re.S).group(1))
    sae_table = Tables(page).of("dinov2-b", "SAE")
    assert [text for text, _ in sae_table["header"]][:4] == ["SAE", "FVU_A", "FVU_O", "L0_A"]
    assert all(titles[text] for text, _ in sae_table["header"])
    assert ReconstructionOutput.model_fields["fvu_a"].description in titles["FVU_A"]
    assert "n_low" in titles["n_low/n_high"] and "n_high" in titles["n_low/n_high"]
    emd = Tables(page).of("dinov2-b", "s")
    assert all(title for _, title in emd["header"]) and "outlier queries" in dict(emd["header"])["attn_emd_out"]


def test_the_paper_row_leads_where_the_paper_reports_the_backbone(page: str) -> None:
    tables = Tables(page)
    dinov2 = tables.of("dinov2-b", "SAE")
    assert _column(dinov2, "SAE") == ["paper", "topk", "relu", "jumprelu"]
    assert (_column(dinov2, "FVU_A")[0], _column(dinov2, "L0_A")[0]) == ("0.039", "29.425")  # Table 6
    assert _column(dinov2, "n_low/n_high") == ["–", "3/4", "–", "–"]  # Table 4 has no dinov2-b row
    assert _column(tables.of("my-vit", "SAE"), "SAE") == ["topk"]


def test_backbone_level_measurements_once_per_backbone(page: str) -> None:
    tables = Tables(page)
    assert not {"EMD out (s=1)", "EMD non (s=1)"} & {text for text, _ in tables.of("dinov2-b", "SAE")["header"]}
    emd = tables.of("dinov2-b", "s")
    assert [text for text, _ in emd["header"]] == ["s", "attn_emd_out", "attn_emd_non", "paper attn_emd_out",
                                                   "paper attn_emd_non"]
    assert emd["rows"] == [["s=1", "6.000", "0.600", "6.960", "0.610"], ["s=2", "5.000", "0.700", "–", "–"],
                           ["s=3", "4.000", "0.800", "–", "–"]]  # Table 7 gives s=1
    my_vit = page.split("<h2>my-vit</h2>")[1]
    assert "No backbone-level measurements for this backbone." in my_vit


def test_claims_held_per_sae(page: str) -> None:
    claims = Tables(page).of("dinov2-b", "claim")
    assert [text for text, _ in claims["header"]] == ["claim", "source", "jumprelu", "relu", "topk"]
    assert claims["rows"] == [["table6.dense", "Table 6", "held", "held", "held"],
                              ["table6.sparse", "Table 6", "not held", "held", "held"]]


def test_plots_are_embedded_pngs(page: str) -> None:
    def images(section: str) -> list[Image.Image]:
        uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', section)
        return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in uris]

    dinov2, my_vit = page.split("<h2>dinov2-b</h2>")[1].split("<h2>my-vit</h2>")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", dinov2)
    assert [c.split(":")[0] for c in captions] == [
        "FVU_A against L0_A per SAE", "attention EMD against the SCC shift s", "Figure 6", "Figure 7",
        "Tables 3, 8", "Figure 9, topk", "Figure 10, topk"]  # only topk stored scope data
    assert all(im.format == "PNG" and min(im.size) > 100 for im in images(dinov2))
    assert len(images(my_vit)) == 1 and min(images(my_vit)[0].size) > 100  # no backbone record: no EMD curve


def test_feature_maps_are_drawn_over_their_stored_images(results: Path, tmp_path: Path) -> None:
    from scopebench.results.html import _feature_map_pngs
    records = [r for r in load_results(results) if r.sae is not None and r.sae.name == "topk"]
    (low, caption), _ = _feature_map_pngs(records, "dinov2-b", tmp_path, 0)
    assert caption.startswith("Figure 9, topk") and low.is_file()
    drawn = np.asarray(Image.open(low).convert("RGB"), dtype=float)
    # the red thumbnail shows through the half-transparent map: the first panel is reddish, not grey
    red, green = drawn[..., 0], drawn[..., 1]
    assert ((red - green) > 60).mean() > 0.02


def test_cli_writes_html_csv_and_markdown(results: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "board"
    code = main(["leaderboard", "--results-dir", str(results), "--write", str(out / "LEADERBOARD.md"),
                 "--html", str(out / "leaderboard.html"), "--csv", str(out / "leaderboard.csv")])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and printed == [f"wrote {out / name} (5 result files from {results})"
                                     for name in ("LEADERBOARD.md", "leaderboard.html", "leaderboard.csv")]
    assert sorted(p.name for p in out.iterdir()) == ["LEADERBOARD.md", "leaderboard.csv", "leaderboard.html"]
    assert (out / "leaderboard.html").read_text() == render_html(load_results(results))
    csv, frame = pd.read_csv(out / "leaderboard.csv"), build_frame(load_results(results))
    assert list(csv.columns) == list(frame.columns)
    assert list(zip(csv["backbone"], csv["SAE"])) == list(zip(frame["backbone"], frame["SAE"]))
    assert csv["FVU_A"].tolist() == frame["FVU_A"].tolist() and csv["EMD out (s=1)"].iloc[0] == 6.0


def test_html_target_that_is_a_folder_is_refused(results: Path, tmp_path: Path, capsys) -> None:
    code = main(["leaderboard", "--results-dir", str(results), "--html", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"--html {tmp_path}: is a folder" in err and "leaderboard/leaderboard.html" in err


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
def test_datatables_initialise_in_chromium(page: str, tmp_path: Path) -> None:
    (tmp_path / "leaderboard.html").write_text(page)
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", (tmp_path / "leaderboard.html").as_uri(),
                    profile=tmp_path / "profile").stdout
    assert dom.count('class="dt-container') == 2 and dom.count('class="dt-search"') == 2
    table = Tables(dom).of("dinov2-b", "SAE")
    assert table["id"] == "sae-table-0" and 'id="sae-table-0_wrapper"' in dom
    assert ReconstructionOutput.model_fields["fvu_a"].description in dict(table["header"])["FVU_A"]
    assert re.search(r'<th[^>]*class="[^"]*dt-orderable-asc', dom)
    assert _column(table, "dead %")[0] == "–" and _column(table, "FVU_A")[1:] == ["0.05", "0.08", "0.12"]


class DevTools:
    """Chromium driven over the DevTools protocol on fds 3/4 (``--remote-debugging-pipe``), one page attached."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._writer = os.pipe()
        self._reader, from_browser = os.pipe()
        # numbers >= 10, so bash's redirections to 3 and 4 cannot overwrite one of them
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{high[0]} 4>&{high[1]}', "bash", str(CHROMIUM), *FLAGS,
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=high, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in high:
            os.close(fd)
        self.events: list[dict] = []
        self._replies: queue.Queue = queue.Queue()
        self._id = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._reader, 1 << 16):
            *messages, buffer = (buffer + chunk).split(b"\0")
            for message in map(json.loads, messages):
                (self._replies.put if "id" in message else self.events.append)(message)

    def send(self, method: str, params: dict | None = None, *, page: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {},
                   **({"sessionId": self.session} if page else {})}
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        while (reply := self._replies.get(timeout=60))["id"] != self._id:
            pass
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
            time.sleep(0.1)

    def click(self, selector_js: str) -> None:
        """A real mouse click (press and release) at the middle of the element ``selector_js`` evaluates to."""
        x, y = self.evaluate(f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
                             "const r = e.getBoundingClientRect(); "
                             "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                      page=True)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=20)
        finally:
            self.process.kill()
            self.process.wait()
            self._thread.join(timeout=10)  # the browser is gone: its end of the pipe is closed
            os.close(self._writer)
            os.close(self._reader)


@pytest.fixture
def browser(tmp_path: Path):
    devtools = DevTools(tmp_path / "profile")
    yield devtools
    devtools.close()


_TABLE = ("[...document.querySelectorAll('section')].find(s => s.querySelector('h2').textContent === 'dinov2-b')"
          ".querySelector('table.dataTable')")


def _saes(browser: DevTools, expected: list[str]) -> list[str]:
    """The SAE column of dinov2-b's table once it reads ``expected`` (DataTables redraws after a timeout), or
    as it still reads after 10 s."""
    deadline = time.monotonic() + 10
    while (found := browser.evaluate(f"[...{_TABLE}.tBodies[0].rows].map(r => r.cells[0].textContent)")) != expected \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@needs_chromium
def test_sorting_filtering_and_no_request_leaves_the_page(page: str, browser: DevTools, tmp_path: Path) -> None:
    (tmp_path / "leaderboard.html").write_text(page)
    for domain in ("Network", "Runtime", "Page"):
        browser.send(f"{domain}.enable", page=True)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                         "mobile": False}, page=True)
    browser.send("Page.navigate", {"url": (tmp_path / "leaderboard.html").as_uri()}, page=True)
    browser.wait_for("document.querySelectorAll('.dt-container').length === 2")
    order = ["paper", "topk", "relu", "jumprelu"]  # as rendered: the paper, then by FVU_A
    assert _saes(browser, order) == order
    header = f"[...{_TABLE}.tHead.rows[0].cells].find(th => th.textContent.trim() === 'L0_A')"
    browser.click(header)
    order = ["jumprelu", "paper", "topk", "relu"]  # L0_A 25, 29.4, 30, 45
    assert _saes(browser, order) == order
    browser.click(header)
    assert _saes(browser, order[::-1]) == order[::-1]
    browser.click(f"{_TABLE}.closest('.dt-container').querySelector('.dt-search input')")
    browser.send("Input.insertText", {"text": "relu"}, page=True)
    assert _saes(browser, ["relu", "jumprelu"]) == ["relu", "jumprelu"]
    shot = tmp_path / "leaderboard.png"
    shot.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, page=True)["data"]))
    assert Image.open(shot).size == (1400, 1000)
    requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert requests and {url.split(":", 1)[0] for url in requests} <= {"file", "data", "blob"}, requests
    problems = [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    assert not problems, problems


def test_claim_hover_shows_the_margin_when_the_file_has_one() -> None:
    from types import SimpleNamespace

    from scopebench.results.html import _verdict
    from scopebench.results.records import ClaimVerdict

    measured = ClaimVerdict(passed=False, detail="fvu_o <= fvu_a fails", source="Table 6", measured={}, margin=-0.25)
    older = ClaimVerdict(passed=True, detail="fvu_o <= fvu_a holds", source="Table 6", measured={})  # no margin
    record = SimpleNamespace(claims={"new": measured, "old": older}, backbone=SimpleNamespace(name="dinov2-b"),
                             sae_architecture="batchtopk")
    assert _verdict(record, "new") == ("not held", "fvu_o <= fvu_a fails (margin -0.25)")
    assert _verdict(record, "old") == ("held", "fvu_o <= fvu_a holds")
    assert ClaimVerdict(passed=False, detail="", source="s", measured={}, margin=float("nan")).margin is None


def test_a_known_planted_miss_reads_known_miss_on_planted_only(known_planted_miss) -> None:
    """The page tells a miss the registry expects on the planted instrument from a real failure."""
    from types import SimpleNamespace

    from scopebench.results.html import _verdict
    from scopebench.results.leaderboard import _claims
    from scopebench.results.records import ClaimVerdict

    claim = "table3.cls-high-removal-improves"
    known_planted_miss(claim, "the context barely misleads the probe")  # a miss of the planted data: every SAE
    missed = ClaimVerdict(passed=False, detail="cls_gain_high_removed_lo > 0 fails", source="Table 3", measured={})
    held = ClaimVerdict(passed=True, detail="fvu_o <= fvu_a holds", source="Table 6", measured={})
    claims = {claim: missed, "table6.outliers-reconstructed-better": held}
    planted = SimpleNamespace(claims=claims, backbone=SimpleNamespace(name="planted"), sae_architecture="batchtopk")
    real = SimpleNamespace(claims=claims, backbone=SimpleNamespace(name="clip-b16"), sae_architecture="batchtopk")
    # the planted data's miss: excused for every SAE on planted, for none elsewhere
    topk = SimpleNamespace(claims=claims, backbone=SimpleNamespace(name="planted"), sae_architecture="topk")
    assert _verdict(planted, claim)[0] == "known miss" and _verdict(topk, claim)[0] == "known miss"
    assert _verdict(real, claim)[0] == "not held"
    assert _verdict(planted, "table6.outliers-reconstructed-better")[0] == "held"
    assert _claims(planted) == f"1/2 (not: {claim} (known miss))"
    assert _claims(real) == f"1/2 (not: {claim})"
    # a missed claim that is not a known miss reads "not held" on planted too
    unexcused = SimpleNamespace(claims={"table6.outliers-fewer-latents": missed}, sae_architecture="batchtopk",
                                backbone=SimpleNamespace(name="planted"))
    assert _verdict(unexcused, "table6.outliers-fewer-latents")[0] == "not held"
