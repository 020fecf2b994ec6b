# asyncreg developer entry points. `make test` works on a fresh Debian machine:
# it installs what the tests need (as root) or says exactly what is missing.

PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
DEB_PKGS  := docker-registry skopeo
PYTEST_ARGS ?=

.PHONY: all venv system-deps check lint typecheck test demo bench clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests run against: the CNCF distribution registry and skopeo.
system-deps:
	@missing=""; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null 2>&1 || missing="$$missing skopeo"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing:$$missing. Run as root: apt-get update && apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

lint: venv
	$(VENV)/bin/ruff check asyncreg tests benchmarks
	$(VENV)/bin/ruff format --check asyncreg tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy --strict asyncreg benchmarks tests

check: lint typecheck

test: system-deps venv check
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: system-deps venv
	$(VPY) -m asyncreg.demo

bench: system-deps venv
	$(VPY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
