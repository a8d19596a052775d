"""One request: sent through its lane's engine, timed, checked and handed to the store
writer at once, with the level's tally kept for the runner (outcome, capacity search)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lib.core.metrics import request_metrics
from lib.core.records import RequestResult, RunConfig
from lib.load.run_state import PreparedLane, RunState, one_line

# Grace beyond the per-request timeout before the runner itself gives up on a request
# whose client did not time out (a server trickling bytes, say).
TIMEOUT_GRACE_S = 5.0


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
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(
            lane.engine.chat(
                lane.spec.model, prompt, config.sampling, config.timeout_s, config.num_ctx
            ),
            timeout=config.timeout_s + TIMEOUT_GRACE_S,
        )
    except asyncio.CancelledError:
        result = RequestResult(t_send=started, t_done=time.perf_counter(), error="cancelled")
        record(state, config, lane, prompt, result, concurrency, idx, prompt_idx, warmup, scheduled)
        raise
    except TimeoutError:
        result = RequestResult(
            t_send=started,
            t_done=time.perf_counter(),
            error=f"timed out after {config.timeout_s:g} s",
        )
    except Exception as exc:  # adapters should not raise; account for it anyway
        result = RequestResult(t_send=started, t_done=time.perf_counter(), error=one_line(exc))
    record(state, config, lane, prompt, result, concurrency, idx, prompt_idx, warmup, scheduled)


def record(
    state: RunState,
    config: RunConfig,
    lane: PreparedLane,
    prompt: Any,
    result: RequestResult,
    concurrency: int,
    idx: int,
    prompt_idx: int,
    warmup: bool,
    scheduled: float | None = None,
) -> None:
    metrics = request_metrics(result)
    quality = None
    if state.quality is not None and result.error is None:
        quality = state.quality(
            result.output_text,
            expect_lang=prompt.expect_lang,
            prompt_text=prompt.text,
            expect_json=prompt.expect_json,
            finish_reason=result.finish_reason,
            output_tokens=result.output_tokens,
            max_tokens=config.sampling.max_tokens,
        )
    row = {
        "run_id": state.run_id,
        "lane_idx": lane.idx,
        "concurrency": concurrency,
        "idx": idx,
        "warmup": warmup,
        "prompt_idx": prompt_idx,
        "t_send": state.clock(result.t_send),
        "t_done": state.clock(result.t_done),
        "t_scheduled": state.clock(scheduled) if scheduled is not None else None,
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
    state.writer.add_request(row)
    tally = state.count(lane.idx, concurrency)
    tally.recorded += 1
    if not result.error:
        tally.output_tokens += result.output_tokens or 0
    if not warmup:
        tally.records.append(
            {k: row[k] for k in ("t_send", "t_done", "ttft_ms", "tpot_ms", "e2el_ms", "error")}
        )
    if result.error and result.error != "cancelled":
        tally.errors.append(result.error)
    elif not result.error:
        tally.ok += 1
    if not warmup:
        if result.error:
            state.failed += 1
        else:
            state.completed += 1
    state.progress(
        {
            "event": "request",
            "lane": lane.spec.name,
            "concurrency": concurrency,
            "warmup": warmup,
            "error": result.error,
            "completed": state.completed,
            "failed": state.failed,
        }
    )
