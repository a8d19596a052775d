"""bench/client_peers.py without the peers: the max-rate search's stepping and verdicts,
the tool rows, and the scripted server on several processes (one port, SO_REUSEPORT)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.client_peers import (
    Server,
    _proc_stat,
    int_list,
    search,
    search_table,
    search_verdict,
    tool_runners,
    tree_cpu_s,
    worker_counts,
)


def row(c: int, got: int, err: float | None = 1.0, **extra: Any) -> dict[str, Any]:
    """A measurement as measure() reports it: 100 chunks/s expected per stream."""
    expected = c * 100
    return {
        "concurrency": c,
        "expected_chunks_s": expected,
        "got_chunks_s": got,
        "ttft_err_p50_ms": err,
        "fell_behind": got < 0.9 * expected,
        "tool_us_cpu_per_chunk": 10.0,
        "server_cores": 0.5,
        "failed": 0,
        "error": None,
    } | extra


@pytest.mark.parametrize(
    ("measured", "why"),
    [
        (row(64, 6400, 4.9), None),
        (row(64, 6400, -30.0), None),  # vllm bench's early TTFT does not stop it
        (row(64, 6400, 5.2), "TTFT err p50 5.2 ms > 5"),
        (row(64, 5000), "behind: 78.1% of schedule"),
        (row(64, 6400, failed=3), "3 requests failed"),
        (row(64, 0, None, error="OSError:\n  exit 1"), "error: OSError: exit 1"),
        (row(64, 6400, None), "no TTFT reported"),
    ],
)
def test_search_verdict(measured: dict[str, Any], why: str | None) -> None:
    assert search_verdict(measured, 5.0) == why


def test_search_interleaves_tools_and_stops_each_at_its_first_failing_level() -> None:
    # a keeps up to 256 (its best: the most chunks/s), b breaks at 128 on timing, c never.
    script = {
        ("a", 64): row(64, 6400),
        ("a", 128): row(128, 12800, 4.0),
        ("a", 256): row(256, 25000, 4.5),
        ("a", 512): row(512, 30000),
        ("b", 64): row(64, 6400),
        ("b", 128): row(128, 12800, 9.0),
        ("c", 64): row(64, 6400),
        ("c", 128): row(128, 12800),
        ("c", 256): row(256, 25600),
        ("c", 512): row(512, 51200),
    }
    order: list[tuple[str, int]] = []

    def measure_one(tool: str, c: int) -> dict[str, Any]:
        order.append((tool, c))
        return script[tool, c]

    results = search(["a", "b", "c"], [64, 128, 256, 512], measure_one, 5.0)
    assert order == [
        ("a", 64), ("b", 64), ("c", 64),
        ("a", 128), ("b", 128), ("c", 128),
        ("a", 256), ("c", 256),
        ("a", 512), ("c", 512),
    ]  # fmt: skip
    a, b, c = results["a"], results["b"], results["c"]
    assert (a.best, a.broke_at, a.why) == (script["a", 256], 512, "behind: 58.6% of schedule")
    assert (b.best, b.broke_at, b.why) == (script["b", 64], 128, "TTFT err p50 9 ms > 5")
    assert (c.best, c.broke_at) == (script["c", 512], None)
    table = search_table(results.values(), 5.0).splitlines()
    assert table[2].split(" | ")[:4] == ["| a", "256", "25,600", "25,000"]
    assert table[3].endswith("| 128 | TTFT err p50 9 ms > 5 |")
    assert table[4].endswith("| — | passed every level |")


def test_search_tries_measures_a_failing_level_again_before_it_counts() -> None:
    tries = iter([row(64, 6400, 7.0), row(64, 6400, 2.0), row(128, 1, 8.0), row(128, 1, 9.0)])
    results = search(["a"], [64, 128], lambda tool, c: next(tries), 5.0, tries=2)
    assert results["a"].best is not None and results["a"].best["ttft_err_p50_ms"] == 2.0
    assert (results["a"].broke_at, next(tries, "all used")) == (128, "all used")


def test_servescope_rows_per_worker_count_then_peers_filtered_by_only() -> None:
    a = argparse.Namespace(ss_workers="1,2,8,auto", servebench="/x/servebench", guidellm=None)
    a.vllm, a.aiperf, a.only = None, None, None
    tools = tool_runners(a)
    names = ["servescope", "servescope-w2", "servescope-w8", "servescope-auto", "servebench"]
    assert list(tools) == names
    workers = [getattr(tools[name], "keywords", None) for name in names]
    assert workers == [{"workers": 1}, {"workers": 2}, {"workers": 8}, {"workers": None}, None]
    a.only = "servescope-w2,servebench"
    assert list(tool_runners(a)) == ["servescope-w2", "servebench"]
    assert int_list("64, 128,") == [64, 128]
    for bad in ("0,2", "2,x", " , "):
        with pytest.raises(ValueError):
            worker_counts(bad)


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        st = _proc_stat(int(name)) if name.isdigit() else None
        if st is not None and st[0] == pid:
            found.append(int(name))
    return found


def listening_on(port: int, pid: int) -> int:
    """How many sockets listening on `port` (IPv4) the process holds."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # TCP_LISTEN
            listening.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    return sum(os.readlink(fd) in listening for fd in fds.iterdir() if fd.is_symlink())


async def stream_once(session: aiohttp.ClientSession, url: str) -> str:
    body = {"model": "scripted-model", "messages": [{"role": "user", "content": "x"}]}
    body |= {"stream": True, "max_tokens": 4}
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        return (await resp.read()).decode()


def test_server_on_several_processes_serves_one_port_and_stops_with_its_parent() -> None:
    srv = Server(ttft_ms=1, gap_ms=1, tokens=4, comments=False, processes=3)
    try:
        kids = children(srv.proc.pid)
        assert len(kids) == 3
        # Each child listens on the port itself; the parent holds none once READY.
        assert [listening_on(srv.port, p) for p in [srv.proc.pid, *kids]] == [0, 1, 1, 1]
        before = [_proc_stat(p) for p in [srv.proc.pid, *kids]]

        async def many() -> list[str]:
            # One connection each: the kernel spreads new connections over the listeners.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
                return await asyncio.gather(*(stream_once(s, srv.url) for _ in range(24)))

        bodies = asyncio.run(many())
        assert all(b.count('"content":') == 5 and b.endswith("data: [DONE]\n\n") for b in bodies)
        total = tree_cpu_s(srv.proc.pid)
        after = [_proc_stat(p) for p in [srv.proc.pid, *kids]]
        # The tree's CPU is the parent's and every child's, read between the two snapshots.
        assert sum(s[1] for s in before if s) <= total <= sum(s[1] for s in after if s)
    finally:
        srv.stop()
    assert srv.proc.returncode == 0
    assert [_proc_stat(p) for p in kids] == [None] * 3  # stopped and reaped by the parent


def test_a_server_process_that_dies_takes_the_others_down() -> None:
    srv = Server(ttft_ms=1, gap_ms=1, tokens=4, comments=False, processes=2)
    first, second = children(srv.proc.pid)
    os.kill(first, signal.SIGKILL)
    assert srv.proc.wait(10) == 1  # a server short of a process must not go on serving
    assert _proc_stat(second) is None
