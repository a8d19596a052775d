"""How levels, lanes and runs are judged from their requests (lib.outcome)."""

from lib.core import outcome


def test_a_level_whose_every_request_failed_is_failed():
    assert outcome.level_status(0, 4) == "failed"
    assert outcome.level_status(3, 1) == "completed with failures"
    assert outcome.level_status(4, 0) == "completed"
    assert outcome.level_status(0, 0) == "completed"
    assert outcome.level_status(0, 4, cancelled=True) == "cancelled"


def test_a_run_is_failed_only_when_every_part_failed():
    assert outcome.combined_status(["failed", "failed"]) == "failed"
    assert outcome.combined_status(["completed", "failed"]) == "completed with failures"
    assert outcome.combined_status(["completed with failures"]) == "completed with failures"
    assert outcome.combined_status(["completed", "completed"]) == "completed"
    assert outcome.combined_status(["failed", "cancelled"]) == "cancelled"
    assert outcome.combined_status([]) == "completed"


def test_the_reason_names_the_commonest_error_and_counts():
    errors = ["cannot connect: [Errno 111]"] * 3 + ["timed out after 60 s"]
    assert outcome.error_reason(errors, 4) == (
        "4 of 4 failed: cannot connect: [Errno 111] (3×) (and 1 other error)"
    )
    assert outcome.error_reason(["timed out after 60 s"] * 4, 4) == (
        "4 of 4 failed: timed out after 60 s"
    )
    assert outcome.error_reason([], 4) is None


def test_failure_lines_and_the_run_error_name_lane_and_level():
    levels = [
        {"lane_idx": 0, "concurrency": 1, "status": "completed", "error": None},
        {"lane_idx": 1, "concurrency": 1, "status": "failed", "error": "4 of 4 failed: x"},
        {"lane_idx": 1, "concurrency": 4, "status": "completed with failures", "error": "y"},
    ]
    names = ["vllm", "llama.cpp"]
    assert outcome.failure_lines(levels, names) == [
        "llama.cpp c=1 failed: 4 of 4 failed: x",
        "llama.cpp c=4 completed with failures: y",
    ]
    assert (
        outcome.run_error(levels, names) == "llama.cpp c=1 failed: 4 of 4 failed: x (+1 more level)"
    )
    assert outcome.run_error(levels[:1], names) is None
