"""Results page: any run by ?run=RUN_ID or from the picker; live while it runs."""

import streamlit as st

from lib import report
from lib.app import live_view, navigation, results_tables, session, slo_section
from lib.report import card as report_card
from lib.report import exports

# No page title: the run's label is the heading, so the charts start higher on screen.
run_id = navigation.run_picker()
if run_id and live_view.run_panel(run_id, "results"):
    db = session.db_key()
    # Files are built only when a button is clicked (deferred data): the card takes
    # a browser start, the report embeds Plotly's bundle.
    with st.container(horizontal=True):
        st.download_button(
            "HTML report",
            data=lambda: report.html_bytes(db, run_id),
            file_name=f"servescope-{run_id}.html",
            mime="text/html",
            icon=":material/description:",
            help="One file that opens offline: settings, charts, tables, answer pairs.",
        )
        try:
            report_card.find_browser()
            card_help, card_ok = "A 1600×900 image for a retro slide.", True
        except report_card.RenderError as exc:
            card_help, card_ok = str(exc), False
        st.download_button(
            "Retro card (PNG)",
            data=lambda: report.png_bytes(db, run_id),
            file_name=f"servescope-{run_id}.png",
            mime="image/png",
            icon=":material/image:",
            help=card_help,
            disabled=not card_ok,
        )
        for fmt, mime in (("csv", "text/csv"), ("parquet", "application/octet-stream")):
            st.download_button(
                f"Requests ({fmt.upper()})",
                data=lambda fmt=fmt: exports.export_bytes(db, run_id, fmt),
                file_name=f"servescope-{run_id}.{fmt}",
                mime=mime,
            )
        st.download_button(
            "vLLM-style JSON",
            data=lambda: exports.json_bytes(db, run_id),
            file_name=f"servescope-{run_id}.json",
            mime="application/json",
            help="The field names `vllm bench serve --save-result` writes, one object per level.",
        )
    slo_section.slo_section(run_id)  # after the charts: the same levels, judged
    results_tables.results_details(run_id)
