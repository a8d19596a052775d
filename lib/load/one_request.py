"""One request: sent through its lane's engine, timed, checked and handed to the store
writer at once, with the level's tally kept for the runner (outcome, capacity search).

Its three steps are separate because a load worker process (lib/load/load_worker.py)
does the first two and the run's own process the third: `timed_chat` (the request,
never raising), `request_row` (its metrics and quality check, the row the store keeps)
and `account` (the store, the level's tally, progress).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.core.metrics import request_metrics
from lib.core.records import Prompt, RequestResult, RunConfig
from lib.engines.base import Engine
from lib.load.run_state import PreparedLane, RunState, one_line

# Grace beyond the per-request timeout before the runner itself gives up on a request
# whose client did not time out (a server trickling bytes, say).
TIMEOUT_GRACE_S = 5.0

# The columns of a row the level's tally keeps, for the capacity search's judgement.
TALLY_COLUMNS = ("t_send", "t_done", "ttft_ms", "tpot_ms", "e2el_ms", "error")


def quality_checker() -> Callable[..., Any] | None:
    """The answers' quality check (lib/quality), None where that module is left out."""
    try:
        from lib.quality import check_answer
    except ImportError:  # the quality module is optional for the core
        return None
    return check_answer


@dataclass(frozen=True)
class RowMaker:
    """What turning a result into a store row needs, in the run's process or a worker."""

    run_id: str
    clock: Callable[[float], float]  # perf_counter seconds -> epoch seconds
    quality: Callable[..., Any] | None
    config: RunConfig


async def one_request(
    state: RunState,
    config: RunConfig,
    lane: PreparedLane,
    concurrency: int,
    idx: int,
    warmup: bool,
    scheduled: float | None = None,
) -> None:
    prompts = lane.prompts or config.prompts
    prompt_idx = idx % len(prompts)
    prompt = prompts[prompt_idx]
    maker = RowMaker(state.run_id, state.clock, state.quality, config)

    def keep(result: RequestResult) -> None:
        row = request_row(
            maker, lane.idx, prompt, result, concurrency, idx, prompt_idx, warmup, scheduled
        )
        account(state, lane.spec.name, row, warmup)

    await timed_chat(lane.engine, lane.spec.model, prompt, config, keep)


async def timed_chat(
    engine: Engine,
    model: str,
    prompt: Prompt,
    config: RunConfig,
    keep: Callable[[RequestResult], None],
) -> None:
    """Send one request and hand its result to `keep`, whatever happened; a cancelled
    request is kept as cancelled before the cancellation goes on."""
    started = time.perf_counter()
    try:
        # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own,
        # a cost per request that shows when hundreds of users finish together.
        async with asyncio.timeout(config.timeout_s + TIMEOUT_GRACE_S):
            result = await engine.chat(
                model, prompt, config.sampling, config.timeout_s, config.num_ctx
            )
    except asyncio.CancelledError:
        keep(RequestResult(t_send=started, t_done=time.perf_counter(), error="cancelled"))
        raise
    except TimeoutError:
        result = RequestResult(
            t_send=started,
            t_done=time.perf_counter(),
            error=f"timed out after {config.timeout_s:g} s",
        )
    except Exception as exc:  # adapters should not raise; account for it anyway
        result = RequestResult(t_send=started, t_done=time.perf_counter(), error=one_line(exc))
    keep(result)


def request_row(
    maker: RowMaker,
    lane_idx: int,
    prompt: Prompt,
    result: RequestResult,
    concurrency: int,
    idx: int,
    prompt_idx: int,
    warmup: bool,
    scheduled: float | None = None,
) -> dict[str, Any]:
    """The row the store keeps for one request: its times on the wall clock, metrics,
    server-counted tokens and the answer's quality check."""
    config = maker.config
    metrics = request_metrics(result)
    quality = None
    if maker.quality is not None and result.error is None:
        quality = maker.quality(
            result.output_text,
            expect_lang=prompt.expect_lang,
            prompt_text=prompt.text,
            expect_json=prompt.expect_json,
            finish_reason=result.finish_reason,
            output_tokens=result.output_tokens,
            max_tokens=config.sampling.max_tokens,
        )
    return {
        "run_id": maker.run_id,
        "lane_idx": lane_idx,
        "concurrency": concurrency,
        "idx": idx,
        "warmup": warmup,
        "prompt_idx": prompt_idx,
        "t_send": maker.clock(result.t_send),
        "t_done": maker.clock(result.t_done),
        "t_scheduled": maker.clock(scheduled) if scheduled is not None else None,
        **metrics,
        "prompt_tokens": result.prompt_tokens,
        "output_tokens": result.output_tokens,
        "token_source": result.token_source,
        "output_text": result.output_text,
        "finish_reason": result.finish_reason,
        "error": result.error,
        "server": result.server,
        "quality": quality,
    }


def account(state: RunState, lane_name: str, row: dict[str, Any], warmup: bool) -> None:
    """Hand the row to the store writer and count it in its level's tally."""
    state.writer.add_request(row)
    error = row["error"]
    tally = state.count(row["lane_idx"], row["concurrency"])
    tally.recorded += 1
    if not error:
        tally.output_tokens += row["output_tokens"] or 0
    if not warmup:
        tally.records.append({k: row[k] for k in TALLY_COLUMNS})
    if error and error != "cancelled":
        tally.errors.append(error)
    elif not error:
        tally.ok += 1
    if not warmup:
        if error:
            state.failed += 1
        else:
            state.completed += 1
    state.progress(
        {
            "event": "request",
            "lane": lane_name,
            "concurrency": row["concurrency"],
            "warmup": warmup,
            "error": error,
            "completed": state.completed,
            "failed": state.failed,
        }
    )
