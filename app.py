"""servescope dashboard: the router and frame (navigation and engine status sidebar).

Run with `streamlit run app.py`. Every page is registered explicitly in lib/app/navigation.PAGES;
a page whose file is not there yet is left out, so the app never breaks.
"""

import streamlit as st

from lib import store
from lib.app import navigation, sidebar

st.set_page_config(page_title="servescope", page_icon=":material/speed:", layout="wide")
try:  # a store that cannot be opened is one line on the page, not a traceback per widget
    with store.opened():
        pass
except store.StoreError as exc:
    st.error(str(exc))
    st.stop()
navigation = st.navigation(navigation.registered_pages())
sidebar.sidebar()
navigation.run()
