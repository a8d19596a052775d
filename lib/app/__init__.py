"""The dashboard's building blocks: the only package under lib/ that imports Streamlit.

app.py and app_pages/ call these; each module draws one part of a page and is named
after it. Logic without widgets lives below (analysis, report, …) or in lane_choices.
"""
