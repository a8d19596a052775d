"""From stored rows to numbers and tables; no figures, no pages, no Streamlit.

results (the run document: per-level metrics, outcomes, settings), frames (pandas
frames of requests, levels and tables for the pages and the report), telemetry_frames
(memory, KV-cache and Ollama samples as frames), lane_memory (one rule for a lane's
memory), history (runs side by side over time).
"""
