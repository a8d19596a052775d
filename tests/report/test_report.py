"""The HTML report and the PNG card: offline, escaped, the stated size; the CLI handlers.

One run is recorded through the real CLI against scripted Ollama and vLLM servers; then
one answer, one error, a lane name and the label are rewritten in the store with markup
(as a hostile model or user could produce), and every output is checked against them.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import re
import sqlite3
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from lib import cli, report
from lib.analysis import lane_memory, results, validation
from lib.cli import reports as cli_reports
from lib.core.usage import OneLineParser
from lib.report import card as report_card
from lib.report import facts as report_facts
from lib.report import sections as report_sections
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer

EVIL_ANSWER = (
    "<script>alert(1)</script><img src=x onerror=alert(2)> see http://evil.example/x\n"
    'line two\r\nline three\rline four, "quoted", =1+2'
)
EVIL_ERROR = "HTTP 503 <b>down</b> at http://user:pw@gpu.lan:8000/v1/chat?key=sk-123"
EVIL_LANE = "<b>evil</b> lane"
EVIL_LABEL = "retro <i>demo</i>"


def record_run(folder: Path) -> tuple[Path, str]:
    """A finished two-lane run (levels 1 and 2) in a fresh store, with hostile text."""
    db = folder / "s.db"
    ollama = OllamaServer(OllamaScript(ttft_ms=20, gap_ms=3))
    vllm = OpenAIServer(OpenAIScript(ttft_ms=20, gap_ms=3, models=["Qwen/Qwen2.5-7B-AWQ"]))
    with ollama, vllm:
        code = cli.main(
            [
                "run",
                "--lane", "ollama", ollama.url, "qwen2.5:7b-instruct-q4_K_M",
                "--lane", "openai", vllm.base_url, "Qwen/Qwen2.5-7B-AWQ",
                "--prompt", "AI 기술에 대한 짧은 뉴스 기사를 써 주세요.",
                "--concurrency", "1,2",
                "--requests", "3",
                "--max-tokens", "8",
                "--label", "plain",
                "--db", str(db),
                "--quiet",
            ]
        )  # fmt: skip
    assert code == 0
    conn = sqlite3.connect(db)
    try:
        run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
        first = "SELECT MIN(id) FROM requests WHERE lane_idx = ? AND concurrency = 1 AND warmup = 0"
        ollama_first = conn.execute(first, (0,)).fetchone()[0]
        vllm_first = conn.execute(first, (1,)).fetchone()[0]
        conn.execute(
            "UPDATE requests SET output_text = ? WHERE id = ?", (EVIL_ANSWER, ollama_first)
        )
        conn.execute(
            "UPDATE requests SET error = ?, ttft_ms = NULL, e2el_ms = NULL, tpot_ms = NULL,"
            " tokens_per_s = NULL, output_text = '' WHERE id = ?",
            (EVIL_ERROR, vllm_first),
        )
        conn.execute("UPDATE lanes SET name = ? WHERE lane_idx = 1", (EVIL_LANE,))
        conn.execute("UPDATE runs SET label = ?", (EVIL_LABEL,))
        conn.commit()
    finally:
        conn.close()
    return db, run_id


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    return record_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(run) -> str:
    db, run_id = run
    return report.html_report(db, run_id)


class Tags(HTMLParser):
    """Every start tag with its attributes; text outside <script> and <style>; the
    contents of each <script> (with its attributes) and <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.text: list[tuple[str, str]] = []  # (class of the enclosing <pre> or "", text)
        self._open: tuple[str, dict[str, str | None]] | None = None
        self._pre: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            if tag == "script":
                self.scripts.append((dict(attrs), ""))
            else:
                self.styles.append("")
        elif tag == "pre":
            self._pre = dict(attrs).get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._open = None
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._open and self._open[0] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif self._open:
            self.styles[-1] += data
        else:
            self.text.append((self._pre or "", data))


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


# --- the HTML report ------------------------------------------------------------------


def test_html_names_no_network_resource(page):
    tags = parse(page)
    fetching = {"link", "iframe", "frame", "object", "embed", "base", "form", "img", "video"}
    fetching |= {"audio", "source", "track", "input", "image", "use"}
    assert not [t for t, _ in tags.tags if t in fetching]
    for tag, attrs in tags.tags:
        for name, value in attrs.items():
            assert name not in ("src", "href", "srcset", "action", "poster", "formaction"), tag
            assert "://" not in (value or ""), (tag, name, value)
            assert not (value or "").startswith("//"), (tag, name, value)
    for css in tags.styles:
        assert "url(" not in css and "@import" not in css
    # Text outside scripts: the one URL is the model's, inside its escaped answer block.
    for where, text in tags.text:
        if re.search(r"https?://|(^|\s)//\w", text):
            assert where == "text" and "evil.example" in text, text
    assert any(where == "text" and "http://evil.example/x" in text for where, text in tags.text)


def unpack7(text: str) -> bytes:
    """A packed data block's bytes: 7 bits a character, U+0100 + v for the three unsafe
    ones, then gzip (written here again, apart from lib/report/sections.py's numpy one)."""
    acc = bits = 0
    out = bytearray()
    for ch in text:
        v = ord(ch)
        v = v - 0x100 if v >= 0x100 else v
        acc, bits = (acc << 7) | v, bits + 7
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 255)
            acc &= (1 << bits) - 1
    return gzip.decompress(bytes(out))


def packed(page: str) -> dict[str, str]:
    """The page's packed blocks by id, as text."""
    return {
        attrs["id"]: text
        for attrs, text in parse(page).scripts
        if attrs.get("type") == report_sections.PACKED_TYPE
    }


def page_figures(page: str) -> list[dict[str, Any]]:
    """The figures the page draws, as the runner hands them to Plotly."""
    doc = json.loads(unpack7(packed(page)["fig-data"]))
    for fig in doc["figures"]:
        fig["layout"].setdefault("template", doc["template"])
    return doc["figures"]


def test_html_inlines_plotly_once_and_allows_only_its_own_scripts(page):
    from plotly.offline import get_plotlyjs

    tags = parse(page)
    code = [text for attrs, text in tags.scripts if "type" not in attrs]
    blocks = packed(page)
    assert all("src" not in attrs for attrs, _ in tags.scripts)
    assert len(tags.scripts) == 3 and set(blocks) == {"plotly-js", "fig-data"}
    bundle = unpack7(blocks["plotly-js"]).decode("utf-8")
    assert bundle == get_plotlyjs()  # the bundle, byte for byte, once
    assert page.count("plotly.js v") == 0  # ...and not a second time in the clear
    for text in blocks.values():  # nothing the HTML parser would change or end early
        assert not set(text) & {"<", "\r", "\0"}
        assert all(ord(ch) < 0x80 or 0x100 <= ord(ch) < 0x180 for ch in text)
    figures = page_figures(page)
    assert len(figures) == 7 and all(fig["data"] is not None for fig in figures)
    assert all(fig["layout"]["template"]["layout"] for fig in figures)
    csp = next(a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp
    script_src = re.search(r"script-src ([^;]+);", csp).group(1).split()
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(c.encode()).digest()).decode() + "'"
        for c in (*code, bundle)
    }
    assert len(code) == 1 and set(script_src) == hashes  # the runner and the bundle only


def test_html_of_the_yardstick_run_is_under_2_mb_with_rounded_data(tmp_path):
    """bench/report_render.py's synthetic run (2 lanes, 4 levels, 50 requests each): the
    report was 4.7 MB with the bundle in the clear and the data as doubles."""
    from bench.report_render import synthetic_run

    db = tmp_path / "bench.db"
    run_id = synthetic_run(db, 50)
    page = report.html_bytes(db, run_id)
    assert len(page) < 2 * 2**20
    figures = page_figures(page.decode("utf-8"))
    timeline = next(f for f in figures if "over time" in f["layout"]["title"]["text"])
    e2el = [y for trace in timeline["data"] for y in trace["y"]]
    assert len(e2el) == 400 and all(isinstance(y, int | float) for y in e2el)
    assert all(round(y, 1) == y for y in e2el)  # ms to 0.1 (values in the thousands)
    ttft = next(f for f in figures if f["layout"]["title"]["text"].startswith("Time to first"))
    assert all(round(y, 2) == y for trace in ttft["data"] for y in trace["y"])


def test_html_escapes_answers_errors_names_and_label(page):
    for raw in ("<script>alert(1)", "<img src=x", "<b>down</b>", "<b>evil</b>", "<i>demo</i>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    # Our own messages name endpoints without scheme, credentials or query.
    assert "HTTP 503 &lt;b&gt;down&lt;/b&gt; at gpu.lan:8000/v1/chat" in page
    assert "user:pw" not in page and "sk-123" not in page
    assert "&lt;b&gt;evil&lt;/b&gt; lane" in page and "retro &lt;i&gt;demo&lt;/i&gt;" in page
    # In the charts the lane name cannot become Plotly markup either.
    figures = page_figures(page)
    names = {trace.get("name") for fig in figures for trace in fig["data"]}
    assert "‹b›evil‹/b› lane" in names and not any("<" in (n or "") for n in names)
    hover = [
        str(trace.get("customdata"))
        for fig in figures
        for trace in fig["data"]
        if "failed" in (trace.get("name") or "")
    ]
    assert hover and "HTTP 503 ‹b›down‹/b› at gpu.lan:8000/v1/chat" in hover[0]


def test_html_states_settings_hardware_engines_and_quality(page, run):
    db, run_id = run
    doc = results.run_document(db, run_id)
    text = " ".join(t for _, t in parse(page).text)
    for needle in (
        "At concurrency 2",
        "Summary per lane and concurrency",
        "Answer quality flags",
        "Engines and models",
        "Q4_K_M",
        "AWQ",
        "Max tokens",
        "CPU",
        "Sample answers side by side",
        "0.33.0",  # the scripted engines' version
    ):
        assert needle in text, needle
    # Endpoints appear as host:port/path: no scheme, nothing that reads as a URL.
    for lane in doc["lanes"]:
        assert lane["base_url"] not in page
        assert report_facts.endpoint_text(lane["base_url"]) in text
    # The summary rows are the results document's, to the digit shown.
    level = doc["lanes"][0]["levels"][1]
    assert f"{level['output_throughput']:,.1f}" in text


def test_html_checks_section_states_the_verdict_and_each_problem_escaped(page, run):
    db, run_id = run
    verdict = results.run_document(db, run_id)["validation"]
    text = " ".join(t for _, t in parse(page).text)
    # After the summary, before the charts.
    assert page.index("<h2>Summary per lane") < page.index("<h2>Checks of the numbers</h2>")
    assert page.index("<h2>Checks of the numbers</h2>") < page.index("<h2>Charts</h2>")
    # record_run turned an answer into an error after the run: the client's own count no
    # longer matches the store, a failed check, so the verdict wears the red badge.
    line = validation.verdict_line(verdict)
    assert f'<span class="status failed">{line}</span>' in page
    lost = (
        "✗ &lt;b&gt;evil&lt;/b&gt; lane c=1 consistency: E2E = TTFT + ITL for all 2 completed "
        "requests; the client recorded 3 requests and 24 tokens, the store holds 3 and 16: "
        "measurements were lost."
    )
    assert f'<li class="fail">{lost}</li>' in page
    for problem in validation.problem_lines(verdict):
        assert problem in text
    # Every check of every level in the table: 2 levels × (5 on Ollama + 4 on vLLM).
    assert "All 18 checks, per lane and level" in text
    assert page.count('<td class="check ') == 18
    assert '<td class="check fail">✗ fail</td>' in page


@pytest.mark.browser
def test_html_opens_offline_in_chromium_and_draws_every_chart(page, tmp_path):
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            tab = browser.new_page(viewport={"width": 1440, "height": 900})
            requests, problems, dialogs = [], [], []
            tab.on("request", lambda r: requests.append(r.url))
            tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            tab.goto(path.as_uri())
            tab.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 7"
            )
            drawn = tab.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        finally:
            browser.close()
    assert requests == [path.as_uri()]
    assert drawn == 7
    assert problems == [] and dialogs == []  # no CSP refusal, no script of the answer ran


def test_report_rejects_a_level_the_run_lacks(run):
    db, run_id = run
    with pytest.raises(report_facts.ConcurrencyError, match=r"levels: 1, 2"):
        report.html_report(db, run_id, concurrency=8)
    with pytest.raises(results.RunNotFound):
        report.html_bytes(db, "no-such-run")


# --- the card ------------------------------------------------------------------------------


def png_header_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_card_is_a_1600x900_png(run, tmp_path):
    db, run_id = run
    data = report.png_bytes(db, run_id)
    assert png_header_size(data) == (1600, 900)
    out = report_card.write_png(db, run_id, tmp_path / "card.png", concurrency=1)
    assert png_header_size(out.read_bytes()) == (1600, 900)


def test_card_page_escapes_and_runs_no_script(run):
    db, run_id = run
    view = report_facts.load_view(db, run_id)
    page = report_card.card_html(view, 1)
    assert "<script" not in page and "<img" not in page and "<b>evil" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the hostile answer is the pair
    assert "default-src 'none'" in page and "script-src" not in page
    assert "concurrency 1 · 3 requests per level" in page and "card: c=1" in page
    with pytest.raises(report_facts.ConcurrencyError):
        report_card.card_html(view, 3)


def test_card_states_the_checks_verdict_and_the_worst_problem(run):
    db, run_id = run
    view = report_facts.load_view(db, run_id)
    verdict = view.doc["validation"]
    for concurrency in (None, 1):
        card = report_card.card_html(view, concurrency)
        (line,) = re.findall(r'<div class="checks bad">.*?</div>', card)
        text = "".join(t for _, t in parse(line).text)
        # The count, then the first failed check (the lane name escaped), then how many
        # more the report lists.
        assert text.startswith(validation.verdict_line(verdict) + " ·\xa0✗ ")
        assert "<b>evil" not in line
        more = len(verdict["problems"]) - 1
        if more:
            assert text.endswith(f" (+{more} more in the report)")
        else:
            assert "more in the report" not in text


def test_no_browser_is_one_clear_line(run, monkeypatch, tmp_path):
    db, run_id = run
    monkeypatch.delenv(report_card.BROWSER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no chromium on PATH
    with pytest.raises(report_card.RenderError) as caught:
        report.png_bytes(db, run_id)
    message = str(caught.value)
    assert "\n" not in message and "no Chromium or Chrome found" in message


def test_a_failing_browser_is_named_with_its_last_words(run, monkeypatch, tmp_path):
    db, run_id = run
    fake = tmp_path / "chrome"
    fake.write_text("#!/bin/sh\necho 'warming up' >&2\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(report_card.BROWSER_ENV, str(fake))
    with pytest.raises(report_card.RenderError, match=r"made no PNG \(exit 3\): cannot open"):
        report.png_bytes(db, run_id)
    monkeypatch.setenv(report_card.BROWSER_ENV, str(tmp_path / "missing"))
    with pytest.raises(report_card.RenderError, match="not an executable browser"):
        report.png_bytes(db, run_id)


def test_failed_runs_still_report(tmp_path):
    from lib import store
    from lib.core.records import LaneSpec, Prompt, RunConfig

    db = tmp_path / "f.db"
    url = "http://user:pw@gpu.lan:8000/v1"
    config = RunConfig(
        lanes=[LaneSpec(engine="openai", base_url=url, model="m")],
        prompts=[Prompt.from_text("hi")],
        concurrency=[1, 2],
    ).to_dict()
    with store.opened(db) as conn:
        store.create_run(conn, "none", config, "", {}, status="failed")
        store.update_run(conn, "none", error=f"cannot connect to {url}")
        store.create_run(conn, "allfail", config, "", {}, status="completed")
        store.add_lane(conn, "allfail", 0, "vllm:m", "openai", url, "m", {"kind": "vllm"}, {})
        failed = {"run_id": "allfail", "lane_idx": 0, "concurrency": 1, "warmup": False}
        failed |= {"prompt_idx": 0, "t_send": 10.0, "t_done": 11.0, "error": "timeout"}
        store.add_requests(conn, [failed | {"idx": i} for i in range(3)])
        store.set_level(conn, "allfail", 0, 1, "completed", 10.0, 11.0)
    page = report.html_report(db, "none")
    card = report_card.card_html(report_facts.load_view(db, "none"))
    for text in (page, card):
        assert "cannot connect to gpu.lan:8000/v1" in text and "user:pw" not in text
    assert "failed</span>" in card and "no level ran" in card
    card = report_card.card_html(report_facts.load_view(db, "allfail"))
    assert "3 of 3 failed" in card and "concurrency 1 ·" in card
    assert "At concurrency 1" in report.html_report(db, "allfail")


# --- facts -----------------------------------------------------------------------------------


def lane(kind: str, telemetry: list[dict[str, Any]]) -> dict[str, Any]:
    return {"engine": kind, "engine_info": {"kind": kind}, "telemetry": telemetry}


def sample(t: float, source: str, name: str, value: float, **labels: str) -> dict[str, Any]:
    return {"t": t, "source": source, "name": name, "value": value, "labels": labels}


def test_memory_prefers_the_engines_own_processes():
    gib = 2.0**30
    samples = [
        sample(1, "nvml", "process_memory_used_bytes", 2 * gib, engine="vllm", pid="1"),
        sample(1, "nvml", "process_memory_used_bytes", 1 * gib, engine="vllm", pid="2"),
        sample(1, "nvml", "process_memory_used_bytes", 9 * gib, engine="ollama", pid="3"),
        sample(1, "nvml", "memory_used_bytes", 20 * gib, gpu="0"),
        sample(2, "nvml", "process_memory_used_bytes", 4 * gib, engine="vllm", pid="1"),
    ]
    assert lane_memory.memory_series(lane("vllm", samples)) == (
        "GPU, engine processes",
        [(1, 3 * gib), (2, 4 * gib)],
    )
    ollama = [sample(1, "ollama", "size", 5e9), sample(1, "ollama", "size_vram", 0.0)]
    assert lane_memory.memory_series(lane("ollama", ollama)) == ("model size, Ollama", [(1, 5e9)])
    ollama.append(sample(2, "ollama", "size_vram", 4e9))
    assert lane_memory.memory_series(lane("ollama", ollama))[0] == "VRAM, Ollama"
    whole = [sample(1, "nvml", "memory_used_bytes", 7.0, gpu="0")]
    whole.append(sample(1, "nvml", "memory_used_bytes", 3.0, gpu="1"))
    assert lane_memory.memory_series(lane("llama.cpp", whole)) == (
        "GPU, whole device",
        [(1, 10.0)],
    )
    assert lane_memory.memory_series(lane("openai", [])) == ("", [])


def test_default_level_is_the_highest_every_lane_measured():
    def doc(*lanes: list[int]) -> dict[str, Any]:
        return {
            "lanes": [
                {"levels": [{"concurrency": c, "completed": 1} for c in levels]} for levels in lanes
            ]
        }

    assert report_facts.default_concurrency(doc([1, 4, 16], [1, 4])) == 4
    assert report_facts.default_concurrency(doc([1, 4], [8])) == 8
    assert report_facts.default_concurrency(doc()) is None


def test_endpoint_text_drops_scheme_credentials_and_query():
    text = report_facts.endpoint_text("https://user:secret@gpu.lan:8000/v1/?key=abc#x")
    assert text == "gpu.lan:8000/v1"
    assert report_facts.endpoint_text("http://127.0.0.1:11434") == "127.0.0.1:11434"
    message = "cannot connect to https://u:p@gpu.lan:8000/v1?key=k (http://h:1/x#f)."
    assert report_facts.scrub_urls(message) == "cannot connect to gpu.lan:8000/v1 (h:1/x)."


# --- the CLI handlers (as lib.cli will wire them) ------------------------------------------


def parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    top = OneLineParser(prog="python -m lib.cli")
    sub = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    return top, cli_reports.add_subcommands(sub)


def call(*argv: str) -> int:
    top, handlers = parser()
    args = top.parse_args(list(argv))
    return handlers[args.command](args)


def test_cli_report_writes_both_files(run, tmp_path, capsys):
    db, run_id = run
    html_path, png_path = tmp_path / "r.html", tmp_path / "c.png"
    code = call("report", run_id, "--html", str(html_path), "--png", str(png_path),
                "--concurrency", "1", "--db", str(db))  # fmt: skip
    assert code == 0
    assert "At concurrency 1" in html_path.read_text(encoding="utf-8")
    assert png_header_size(png_path.read_bytes()) == (1600, 900)
    out = capsys.readouterr().out
    assert f"wrote {html_path}" in out and f"wrote {png_path}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["RUN"], "give --html FILE, --png FILE or both"),
        (["RUN", "--png", "OUT/c.png", "--concurrency", "64"], "concurrency 64 is not in"),
        (["nope", "--html", "OUT/r.html"], "no run 'nope'"),
        (["RUN", "--html", "OUT/missing/r.html"], "folder"),
    ],
)
def test_cli_report_errors_are_one_line_and_write_nothing(run, tmp_path, argv, message):
    db, run_id = run
    argv = [a.replace("RUN", run_id).replace("OUT", str(tmp_path)) for a in argv]
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        call("report", *argv, "--db", str(db))
    assert os.listdir(tmp_path) == []


def test_card_render_retries_a_browser_that_hangs(tmp_path, monkeypatch):
    """Headless --screenshot now and then never exits: the second try uses a fresh one."""
    import stat
    import struct
    import zlib

    from lib.report import card as report_card

    def png(width: int, height: int) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        raw = b"".join(b"\0" + b"\xff\xff\xff" * width for _ in range(height))
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))  # fmt: skip

    (tmp_path / "card.png").write_bytes(png(4, 3))
    marker = tmp_path / "started-once"
    fake = tmp_path / "fake-chromium"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then touch "{marker}"; exec sleep 60; fi\n'
        'for a in "$@"; do case "$a" in --screenshot=*) '
        f'cp "{tmp_path / "card.png"}" "${{a#--screenshot=}}";; esac; done\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(report_card.BROWSER_ENV, str(fake))
    monkeypatch.setattr(report_card, "RENDER_TIMEOUT_S", 1.0)
    data = report_card.render_png("<p>card</p>", width=4, height=3)
    assert report_card.png_size(data) == (4, 3) and marker.exists()
    marker.unlink()
    monkeypatch.setattr(report_card, "RENDER_ATTEMPTS", 1)
    with pytest.raises(report_card.RenderError, match="took over 1 s"):
        report_card.render_png("<p>card</p>", width=4, height=3)
