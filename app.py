"""servescope dashboard (placeholder until the dashboard lands)."""

import streamlit as st

st.set_page_config(page_title="servescope", layout="wide")
st.title("servescope")
st.write("Benchmark LLM serving engines side by side. Use `python -m lib.cli run --help` for now.")
