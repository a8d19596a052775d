"""Engines: every endpoint with its status and models; add, edit and remove saved ones;
pull another Ollama quantization or get the `vllm serve` command for another variant.
A viewer sees and probes the endpoints; the controls that change them are an operator's."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib import endpoints as ep
from lib.app import access, formatting, session
from lib.app.formatting import esc_md
from lib.endpoints import variants
from lib.engines.base import EngineError

DB = session.db_key()
MAY_EDIT = access.can_write()  # a viewer changes no endpoint and pulls no model
API_CHOICES = ["auto", "ollama", "openai"]
API_LABELS = {"auto": "auto-detect", "ollama": "Ollama (native API)", "openai": "OpenAI-compatible"}


def label_of(choice: str) -> str:
    # Idempotent: AppTest re-applies format_func to an already formatted option.
    return API_LABELS.get(choice, choice)


def api_of(choice: str) -> str | None:
    """The stored API: None means auto-detect on every probe."""
    return None if choice == "auto" else choice


def secrets():
    """st.secrets when .streamlit/secrets.toml exists (for API keys), else None."""
    return st.secrets if st.secrets.load_if_toml_exists() else None


def refresh(message: str | None = None) -> None:
    """Probe again (here, in the sidebar and on the Run page), with a message to show."""
    session.endpoint_statuses.clear()
    if message:
        st.session_state["engines_flash"] = message
    st.rerun()


st.title("Engines")
if flash := st.session_state.pop("engines_flash", None):
    st.success(esc_md(flash))

# Shared with the sidebar and the Run page, cached for session.ENDPOINT_TTL_S (10 s).
statuses = session.endpoint_statuses(DB)
# A server is listed once; an older store may hold an entry that hides another (the
# sandbox's, say), which would otherwise just be missing from the list.
for hidden, by in ep.hidden_endpoints(DB):
    st.warning(esc_md(ep.hidden_line(hidden, by)))
top = st.columns([4, 1])
top[0].caption(
    "Defaults come from SERVESCOPE_OLLAMA_URL and SERVESCOPE_VLLM_URL, sandbox engines "
    "from the sandbox, the rest are saved here. Statuses are at most 10 s old."
)
if top[1].button("Test all", icon=":material/refresh:"):
    refresh()

if not statuses:
    st.info("No endpoints: both defaults are disabled. Add one below.")
else:
    st.dataframe(
        formatting.dashed(pd.DataFrame(ep.status_rows(statuses, secrets()))),
        hide_index=True,
        column_config={
            "name": "Endpoint",
            "source": "From",
            "url": st.column_config.TextColumn("Base URL", width="medium"),
            "reachable": st.column_config.CheckboxColumn("Up"),
            "engine": "Engine",
            "version": "Version",
            "models": st.column_config.NumberColumn("Models"),
            "api_key": st.column_config.TextColumn("API key variable"),
            "problem": st.column_config.TextColumn("Problem", width="large"),
        },
    )

for status in statuses:
    e = status.endpoint
    # Names and versions come from users and engines: escaped, never markdown.
    with st.expander(f"{formatting.esc_md(e.name)} — {formatting.esc_md(ep.status_line(status))}"):
        if status.error:
            (st.warning if status.reachable else st.error)(esc_md(status.error))
        if st.button("Test", key=f"test:{e.name}", help="Probe this endpoint now"):
            fresh = ep.probe(e, timeout=3.0, secrets=secrets())
            session.endpoint_statuses.clear()
            if fresh.reachable and not fresh.error:
                st.success(esc_md(ep.status_line(fresh)))
            else:
                st.error(esc_md(fresh.error or "unreachable"))
        if status.models:
            st.dataframe(
                formatting.dashed(pd.DataFrame(ep.model_rows(status.models))),
                hide_index=True,
                key=f"models:{e.name}",
                column_config={
                    "model": st.column_config.TextColumn("Model", width="medium"),
                    "quantization": "Quantization",
                    "parameters": "Parameters",
                    "family": "Family",
                    "context_length": st.column_config.NumberColumn("Context (tokens)"),
                    # "398 MB" rather than GB to two places, where a 7 MB model read 0.01.
                    "size_gb": None,
                    "size": st.column_config.TextColumn("Size"),
                    "digest": st.column_config.TextColumn("Digest / root", width="medium"),
                },
            )

        if MAY_EDIT and status.reachable and status.api == "ollama":
            with st.form(f"pull:{e.name}"):
                tag = st.text_input(
                    "Pull another model or quantization",
                    key=f"pull_tag:{e.name}",
                    placeholder="qwen2.5:7b-instruct-q8_0",
                    help="An Ollama name[:tag]; the variants of a model are its tags.",
                )
                pulled = st.form_submit_button("Pull", key=f"pull_go:{e.name}")
            if pulled:
                bar = st.progress(0.0, text="Starting…")

                def show(p: variants.PullProgress, bar=bar) -> None:
                    text = esc_md(p.status or "…")
                    if p.fraction is not None:
                        text += f" — {p.completed / 1e9:.2f} of {p.total / 1e9:.2f} GB"
                    bar.progress(p.fraction or 0.0, text=text)

                try:
                    variants.pull_model(
                        status.base_url, tag, ep.resolve_api_key(e, secrets()), on_progress=show
                    )
                except (ValueError, EngineError) as exc:
                    bar.empty()
                    st.error(esc_md(str(exc)))
                else:
                    refresh(f"Pulled {tag.strip()} into {e.name}.")

        served = ep.served_model(status)
        if status.reachable and served is not None:
            st.text(ep.served_line(served))
            # Not `variants`: that name is the module, needed again by the next endpoint.
            siblings = variants.vllm_variants(served, status.base_url)
            if status.engine == "vllm" and not siblings:
                st.caption(
                    "No other quantization to suggest: the served model is a local folder "
                    "whose name does not say its quantization."
                )
            if status.engine == "vllm" and siblings:
                by_label = {v.label: v for v in siblings}
                choice = st.selectbox(
                    "Serve another quantization instead", list(by_label), key=f"variant:{e.name}"
                )
                st.code(by_label[choice].command, language="bash")
                st.caption(
                    "Run it where this vLLM runs, after stopping it (same port and context "
                    "length, so lanes stay comparable; vLLM reads the quantization from the "
                    "checkpoint). Names follow the publisher's usual pattern: check the repo "
                    "exists before downloading."
                )

        if MAY_EDIT and e.source == "saved":
            with st.form(f"edit:{e.name}"):
                st.markdown("**Edit**")
                cols = st.columns(2)
                name = cols[0].text_input("Name", value=e.name, key=f"edit_name:{e.name}")
                url = cols[1].text_input("URL", value=e.url, key=f"edit_url:{e.name}")
                api = cols[0].selectbox(
                    "API",
                    API_CHOICES,
                    index=API_CHOICES.index(e.api or "auto"),
                    format_func=label_of,
                    key=f"edit_api:{e.name}",
                )
                key_env = cols[1].text_input(
                    "API key environment variable (name only)",
                    value=e.api_key_env or "",
                    key=f"edit_key:{e.name}",
                )
                if st.form_submit_button("Save changes", key=f"edit_go:{e.name}"):
                    try:
                        edited = ep.Endpoint(
                            name.strip(), url.strip(), api_of(api), key_env.strip() or None
                        )
                        ep.save_endpoint(edited, DB, replaces=e.name)
                    except ValueError as exc:
                        st.error(esc_md(str(exc)))
                    else:
                        refresh(f"Saved {name.strip()}.")
            sure = st.checkbox("Yes, remove this endpoint", key=f"remove_ok:{e.name}")
            if st.button("Remove", key=f"remove:{e.name}", disabled=not sure):
                ep.remove_endpoint(e.name, DB)
                st.session_state.pop(f"remove_ok:{e.name}", None)
                refresh(f"Removed {e.name}.")

if not MAY_EDIT:
    st.caption("Viewers see the endpoints; operators add, edit and remove them.")
    st.stop()
st.subheader("Add an endpoint")
with st.form("add_endpoint"):
    cols = st.columns(2)
    name = cols[0].text_input("Name", key="add_name", placeholder="gpu box vLLM")
    url = cols[1].text_input("URL", key="add_url", placeholder="http://10.0.0.5:8000/v1")
    api = cols[0].selectbox("API", API_CHOICES, format_func=label_of, key="add_api")
    key_env = cols[1].text_input(
        "API key environment variable (name only, optional)",
        key="add_key_env",
        placeholder="GPU_BOX_API_KEY",
        help="The key itself stays in the environment or .streamlit/secrets.toml; "
        "only this name is saved.",
    )
    if st.form_submit_button("Add endpoint"):
        try:
            new = ep.Endpoint(name.strip(), url.strip(), api_of(api), key_env.strip() or None)
            ep.save_endpoint(new, DB)
        except ValueError as exc:
            st.error(esc_md(str(exc)))
        else:
            refresh(f"Added {name.strip()}.")
