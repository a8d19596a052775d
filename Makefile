# servescope: `make run` starts the dashboard, `make test` runs the whole suite.
# Everything either needs is installed here, from the package registries.

PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-stamp
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test lint format venv browser postgres sandbox-up sandbox-down clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Debian's chromium drives the browser test and renders the PNG card (Playwright's own
# browser download does not work on machines without general internet); the Noto CJK
# fonts draw the Korean, Chinese and Japanese answers instead of empty boxes.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; } || { \
		echo "installing Debian's chromium and CJK fonts for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			chromium fonts-noto-cjk >/dev/null; }

# Debian's PostgreSQL server: the store suite runs on both backends, each test session
# starting its own server in a temporary folder on a free port (tests/postgres_server.py).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql for the store tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			postgresql >/dev/null; }

run: $(STAMP)
	@$(PY) -m sandbox ensure --background || true
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) --server.headless true

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: $(STAMP) browser postgres lint
	$(PY) -m pytest -q -ra

sandbox-up: $(STAMP)
	$(PY) -m sandbox up

sandbox-down: $(STAMP)
	$(PY) -m sandbox down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
