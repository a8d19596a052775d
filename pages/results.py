"""Results page: any run by ?run=RUN_ID or from the picker; live while it runs."""

import streamlit as st

from lib import ui

st.title("Results")
run_id = ui.run_picker()
if run_id and ui.run_panel(run_id, "results"):
    ui.results_details(run_id)
