# The README's two commands: `make demo` (main job on the embedded demo data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1


.PHONY: setup demo test test-fast lint clean-outputs

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/zalo-music quickstart

# What CI runs: every tier, the rehearsal of the real recipe included. The tests drive the web demo in
# Debian's headless chromium: setup installs it for them.
test:
	ZALO_MUSIC_BROWSER=1 bash scripts/setup.sh
	$(PY) -m pytest -q --durations=15

# The inner loop: the unit tests (no `e2e`, `slow` or `rehearsal` marker), under 3 minutes.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not rehearsal and not e2e" --durations=10

lint: setup
	$(VENV)/bin/ruff check zalo_music hydra_plugins grids tests scripts

clean-outputs:
	rm -rf outputs data manifests/demo
