"""Sensilla's dashboard: the entry page of the multipage Streamlit app.

Run it with ``sensilla ui`` (which starts Streamlit headless, bound to loopback,
with the relay's address and credentials in the environment, see ui/data.py).
This file sets up navigation and the sidebar (time window, relay status); each
page lives in ui/views/ and reads the relay through ui/data.py only.

(The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder next to
the entry script as a legacy multipage app until st.navigation has run once, so
the first request of a fresh server to a deep link such as /troubleshoot?from=…
would run the page without this file's navigation, relay check and sidebar.)
"""

from __future__ import annotations

import streamlit as st

from ui import data
from ui.components import banner, window

st.set_page_config(page_title="Sensilla", layout="wide")  # no page_icon: no CDN fetch

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/service_map.py", title="Service map", icon=":material/hub:"),
    st.Page("views/flows.py", title="Flows", icon=":material/table_rows:"),
    st.Page("views/drops.py", title="Drops", icon=":material/block:"),
    st.Page("views/troubleshoot.py", title="Troubleshoot", icon=":material/troubleshoot:"),
]
page = st.navigation(PAGES)

window.sidebar_picker()
cfg = data.config()
st.sidebar.caption(f"Relay `{cfg.address}`" + (" · TLS" if cfg.tls else "")
                   + (" · token" if cfg.token_file else ""))

try:
    status = data.status()
except data.RelayError as err:
    st.sidebar.error("Relay unreachable" if err.kind == "unavailable" else err.title,
                     icon=":material/cloud_off:")
    st.header(page.title)
    banner.relay_error(err)
    st.stop()

connected = status.connected_nodes
unavailable = status.unavailable_nodes
parts = [f"{status.num_flows:,} flows stored"]
if connected is not None:
    parts.insert(0, f"{connected} node{'s' if connected != 1 else ''} connected")
st.sidebar.success(" · ".join(parts), icon=":material/check_circle:")
if unavailable:
    st.sidebar.warning(f"{unavailable} node(s) unavailable: {', '.join(status.unavailable)}",
                       icon=":material/warning:")

try:
    page.run()
except Exception as exc:  # never a traceback: a banner, details in the log
    banner.ui_failure(exc)
