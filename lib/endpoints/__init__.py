"""The endpoint registry: which engine endpoints exist, what answers at each, and keys.

The public API callers use as `endpoints.<name>`; the code lives in submodules:
registry (the defaults, the sandbox's engines and saved endpoints, merged), urls
(validation, redaction, same-server keys), keys (API keys), probing (what answers,
status lines and rows), model_labels (model rows and picker labels), variants
(pulling or serving another quantization) and variant_recipes (those variants as recipes
a matrix starts).

Only the *name* of an API key's environment variable is ever stored. The key value
is read from the environment or `.streamlit/secrets.toml` at the moment it is
needed and never put in a record, a repr, an error message or a log.

No streamlit import here: the Run page, the Engines page, the sidebar and tests
all call these functions.
"""

from __future__ import annotations

from lib.endpoints.keys import resolve_api_key
from lib.endpoints.model_labels import guess_quantization, model_option, model_rows, size_label
from lib.endpoints.probing import (
    EndpointStatus,
    probe,
    probe_all,
    probe_async,
    served_line,
    served_model,
    status_line,
    status_rows,
)
from lib.endpoints.registry import (
    APIS,
    DEFAULT_OLLAMA_NAME,
    DEFAULT_OLLAMA_URL,
    DEFAULT_VLLM_NAME,
    DEFAULT_VLLM_URL,
    ENV_NAME_RE,
    MAX_NAME_LEN,
    OLLAMA_URL_ENV,
    SANDBOX_PREFIX,
    SOURCES,
    VLLM_URL_ENV,
    Endpoint,
    configured_endpoints,
    default_endpoints,
    find_endpoint,
    hidden_endpoints,
    hidden_line,
    remove_endpoint,
    sandbox_endpoints,
    save_endpoint,
    saved_endpoints,
    validate_endpoint,
)
from lib.endpoints.urls import MAX_URL_LEN, normalize_url, redact_url, url_key, validate_url

__all__ = [
    "APIS",
    "DEFAULT_OLLAMA_NAME",
    "DEFAULT_OLLAMA_URL",
    "DEFAULT_VLLM_NAME",
    "DEFAULT_VLLM_URL",
    "ENV_NAME_RE",
    "MAX_NAME_LEN",
    "MAX_URL_LEN",
    "OLLAMA_URL_ENV",
    "SANDBOX_PREFIX",
    "SOURCES",
    "VLLM_URL_ENV",
    "Endpoint",
    "EndpointStatus",
    "configured_endpoints",
    "default_endpoints",
    "find_endpoint",
    "guess_quantization",
    "hidden_endpoints",
    "hidden_line",
    "model_option",
    "model_rows",
    "normalize_url",
    "probe",
    "probe_all",
    "probe_async",
    "redact_url",
    "remove_endpoint",
    "resolve_api_key",
    "sandbox_endpoints",
    "save_endpoint",
    "saved_endpoints",
    "served_line",
    "served_model",
    "size_label",
    "status_line",
    "status_rows",
    "url_key",
    "validate_endpoint",
    "validate_url",
]
