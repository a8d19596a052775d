"""Run page: set up lanes and a workload, start a run, watch it live (a viewer watches only)."""

import streamlit as st

from lib.app import access, live_view, navigation, run_form

VIEWER_NOTE = (
    "You are signed in as a viewer: operators start runs. A run in progress shows here "
    "live; finished runs are on the Results and History pages."
)

may_start = access.can_write()
run_id = navigation.attached_run()
if run_id and live_view.run_panel(run_id, "run"):
    navigation.show_run(run_id)
    # The run stays on top; the form folds away so the live view is what one sees.
    if may_start:
        with st.expander("Start another run", icon=":material/add:"):
            run_form.run_form()
else:
    if run_id:
        navigation.show_run(None)  # a stale ?run= (deleted run): forget it
    st.title("Run a benchmark")
    st.caption(
        "Compare engines side by side: each lane is an endpoint and a model on it, or an "
        "engine variant servescope starts, measures and stops (a matrix). "
        "Lanes run one after another by default, so they do not share the GPU."
    )
    if may_start:
        run_form.run_form()
    else:
        st.info(VIEWER_NOTE, icon=":material/visibility:")
