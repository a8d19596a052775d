"""The settings table in words: a rate run lists its request rates and arrivals (never
"Concurrency levels 1"), a capacity run its search and latency targets, a synthetic run
its prompt lengths and seed; a closed-loop run keeps its "Concurrency levels" row."""

from __future__ import annotations

from typing import Any

import pytest

from lib.analysis import frames, results
from lib.core.load_pattern import CapacitySearch, LoadPattern
from lib.core.records import LaneSpec, Prompt, RunConfig
from lib.core.slo import Slo
from tests.analysis.test_frames import make_seed_run
from tests.charts.test_capacity_charts import make_rate_run

RAW_KEYS = ("load", "slo", "capacity", "synthetic")


def _settings(doc: dict[str, Any]) -> dict[str, str]:
    table = frames.settings_frame(doc)
    assert table["setting"].is_unique
    return dict(table.values.tolist())


def _doc(env: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """A document's settings as results.run_document makes them from a stored config."""
    run = RunConfig(lanes=[LaneSpec("ollama", "u", "m")], prompts=[Prompt.from_text("hi")])
    for key, value in config.items():
        setattr(run, key, value)
    return {"settings": results._settings(run.to_dict(), env or {}), "lanes": []}


def test_rate_run_lists_its_rates_and_arrivals(tmp_path):
    db = tmp_path / "store.db"
    doc = results.run_document(db, make_rate_run(db, slo=Slo(ttft_ms=500)))
    rows = _settings(doc)
    assert "Concurrency levels" not in rows
    assert rows["Request rates"] == "2, 8 req/s, all at once"
    assert rows["Arrivals"] == "Poisson (random gaps)"
    assert rows["Burstiness"].startswith("1 ")
    assert rows["Max requests in flight"] == "no cap"
    assert rows["Arrivals seed"] == "3"
    assert rows["Latency targets (SLO)"] == "TTFT ≤ 500 ms, for 90% of requests"
    assert not set(RAW_KEYS) & set(rows)  # no raw dicts ("mode: rate, rates: …")
    # In the table's order: the load where the concurrency levels would be.
    order = list(rows)
    assert (
        order.index("Ignore EOS") < order.index("Request rates") < order.index("Requests per level")
    )


def test_constant_arrivals_with_a_cap_and_a_ramp():
    load = LoadPattern(
        mode="rate", rates=[4.0, 0.5], arrival="constant", max_concurrency=8, ramp_from=1.0
    )
    rows = _settings(_doc({"load_seed": 42}, load=load))
    assert rows["Request rates"] == "4, 0.5 req/s"
    assert rows["Arrivals"] == "constant (even gaps)"
    assert "Burstiness" not in rows  # only a Poisson/gamma schedule has one
    assert rows["Max requests in flight"] == "8"
    assert rows["Ramp"] == "from 1 req/s up to each level's rate"
    assert rows["Arrivals seed"] == "42"  # drawn by the runner, kept in the environment
    only_all = _settings(_doc(load=LoadPattern(mode="rate", rates=[None])))
    assert only_all["Request rates"] == "all at once"


@pytest.mark.parametrize(
    ("search", "text", "open_loop"),
    [
        (
            CapacitySearch(mode="concurrency", start=1, max=64),
            "by concurrency: from 1 user, doubling up to 64, then within 1 user",
            False,
        ),
        (
            CapacitySearch(mode="rate", start=0.5, max=32, tolerance=0.05),
            "by request rate: from 0.5 req/s, doubling up to 32 req/s, then within 5%",
            True,
        ),
    ],
)
def test_capacity_run_states_its_search_and_targets(search, text, open_loop):
    slo = Slo(ttft_ms=300, tpot_ms=50, target=0.95)
    rows = _settings(_doc(capacity=search, slo=slo))
    assert rows["Capacity search"] == text
    assert "Concurrency levels" not in rows and "Request rates" not in rows
    assert rows["Latency targets (SLO)"] == slo.describe()
    assert ("Arrivals" in rows) is open_loop  # a search by rate paces its levels open loop
    assert not set(RAW_KEYS) & set(rows)


def test_synthetic_run_states_its_lengths_and_seed():
    synthetic = {"input_tokens": 1024, "output_tokens": 128, "shared_prefix_tokens": 256}
    rows = _settings(_doc({"synthetic_seed": 9}, synthetic=synthetic))
    assert rows["Synthetic input tokens"] == "1024 (256 shared by every prompt)"
    assert rows["Synthetic output tokens"] == "128"
    assert rows["Synthetic prompts seed"] == "9"
    order = list(rows)
    assert order.index("Synthetic input tokens") == order.index("Prompts") + 1
    free = {"input_tokens": 64, "output_tokens": None, "shared_prefix_tokens": 0, "seed": 5}
    rows = _settings(_doc(synthetic=free))
    assert rows["Synthetic input tokens"] == "64"
    assert rows["Synthetic output tokens"] == "up to max tokens"
    assert rows["Synthetic prompts seed"] == "5"


def test_closed_loop_run_keeps_its_concurrency_levels(tmp_path):
    db = tmp_path / "store.db"
    rows = _settings(results.run_document(db, make_seed_run(db)))
    assert rows["Concurrency levels"] == "1, 5"
    for name in ("Request rates", "Arrivals", "Capacity search", "Latency targets (SLO)"):
        assert name not in rows
    assert not set(RAW_KEYS) & set(rows)
    # A closed-loop run judged against targets names them.
    rows = _settings(_doc(concurrency=[2, 4], slo=Slo(e2el_ms=2000)))
    assert rows["Concurrency levels"] == "2, 4"
    assert rows["Latency targets (SLO)"] == "E2E ≤ 2000 ms, for 90% of requests"
    assert "Arrivals" not in rows
