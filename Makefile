# The README's two commands: `make demo` (main job on the embedded demo data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1


.PHONY: setup demo test lint clean-outputs

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/zalo-music quickstart

# The tests drive the web demo in Debian's headless chromium: setup installs it for them.
test:
	ZALO_MUSIC_BROWSER=1 bash scripts/setup.sh
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check zalo_music hydra_plugins grids tests scripts

clean-outputs:
	rm -rf outputs data manifests/demo
