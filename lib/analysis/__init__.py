"""From stored rows to numbers and tables; no figures, no pages, no Streamlit.

results (the run document: per-level metrics, outcomes, settings), load_levels (each
level's load, SLO attainment and goodput; each lane's capacity), validation (+
validation_summary: each level's checks of its own numbers), verdict (+ verdict_words: how
each lane scales, in words), regression (the CI gate's comparison), frames (pandas frames
of requests, levels and tables for the pages and the report; progress_frames,
load_frames and document_frames beside it), telemetry_frames (memory, KV-cache and
Ollama samples as frames), lane_memory (one rule for a lane's memory), history (runs side
by side over time), matrix_frames (a matrix run's cells side by side, their memory rows).
"""
