"""servescope dashboard: the router and frame (sign-in, navigation and engine status sidebar).

Run with `streamlit run app.py`. Every page is registered explicitly in lib/app/navigation.PAGES;
a page whose file is not there yet is left out, so the app never breaks. A shared dashboard
signs people in first (lib/app/access.py, docs/team.md); a viewer's pages are drawn with
read-only store connections.
"""

import streamlit as st

from lib import store
from lib.app import access, navigation, sidebar

st.set_page_config(page_title="servescope", page_icon=":material/speed:", layout="wide")
store.keep_connections()  # a long-lived process: reuse PostgreSQL connections between calls
access.gate()  # the sign-in page until signed in (nothing at all for local use)
with access.store_scope():
    try:  # a store that cannot be opened is one line on the page, not a traceback per widget
        with store.opened():
            pass
    except store.StoreError as exc:
        st.error(str(exc))
        st.stop()
    navigation = st.navigation(navigation.registered_pages())
    sidebar.sidebar()
    navigation.run()
