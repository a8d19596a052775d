"""The dashboard's building blocks: the only package under lib/ that imports Streamlit.

app.py and app_pages/ call these; each module draws one part of a page and is named
after it. Logic without widgets lives in the packages below (analysis, report, ...) or,
for the run form, in lane_choices.py. matrix_section: a matrix run's cells side by side.
Run page lanes: endpoints (run_form) or the matrix (matrix_inputs: engines servescope starts).

Rules kept here: SQLite connections are opened per call and closed at once; long-lived
objects (a run's request log) live in st.cache_resource; st.session_state holds only
small ids (the shown run, the lane ids of the form); the live view's fragments rerun only
while their run is active and rerun the page once when it ends. Model output is
untrusted: it is shown with st.code / st.text, never as HTML or markdown; names that
reach markdown (lane and endpoint names) are escaped first.
"""
