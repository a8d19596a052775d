"""Telemetry beside a benchmark: NVML GPUs, vLLM and llama.cpp /metrics, Ollama /api/ps.

Sample names (source, name, labels), as stored with a run:

- nvml, per GPU {"gpu", "name"}: memory_used_bytes, memory_total_bytes,
  utilization_gpu_pct, power_w, energy_j (joules since the recorder started).
- nvml, per GPU process {"gpu", "pid", "process", "engine"}: process_memory_used_bytes.
- vllm {"model_name"}: kv_cache_usage_perc (0-1; gpu_cache_usage_perc on old servers),
  num_requests_running, num_requests_waiting, num_preemptions_total,
  prompt_tokens_total, generation_tokens_total, each `*_total` also as `*_total_delta`
  (growth since the recorder started); cache_config_info (value 1, config in labels)
  once per recorder.
- llama.cpp: every `llamacpp:` series minus the prefix; prompt_tokens_total,
  tokens_predicted_total and n_decode_total also as `*_delta`.
- ollama {"model"}: size, size_vram, context_length, expires_at (epoch s), gpu_share.
"""

from lib.telemetry.hardware import hardware_info
from lib.telemetry.nvml import NvmlSampler, classify_process, gpu_snapshot, identify_process
from lib.telemetry.parsers import (
    MetricsFormatError,
    detect_metrics_dialect,
    parse_llamacpp_metrics,
    parse_ollama_ps,
    parse_vllm_metrics,
)
from lib.telemetry.recorder import TelemetryRecorder, TelemetryTarget, root_url

__all__ = [
    "MetricsFormatError",
    "NvmlSampler",
    "TelemetryRecorder",
    "TelemetryTarget",
    "classify_process",
    "detect_metrics_dialect",
    "gpu_snapshot",
    "hardware_info",
    "identify_process",
    "parse_llamacpp_metrics",
    "parse_ollama_ps",
    "parse_vllm_metrics",
    "root_url",
]
