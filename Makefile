# Two commands do all set-up on a fresh machine:
#   make train   builds the environment, trains SL-ViT (+SATA, CB) on the offline digits data, exports it (training/configs/digits_sl_vit.py)
#   make test    builds the environment, runs the test suite once per backend (what CI runs)
# For developers:
#   make test-fast   one backend (FAST_BACKEND, torch: the quickest), without the tests marked `large`
#   make coverage    make test with line coverage of keras_smallvit/ per backend (coverage/<backend>.json)
#   make docs        mkdocs build --strict into .site/ (git-ignored; make test runs it first)
PYTHON ?= python3
VENV ?= .venv
BACKENDS ?= tensorflow jax torch
# Two workers on two cores (a third measured slower on the whole suite: TF 535 s vs 485 s, torch 315 s vs 300 s).
PYTEST_ARGS ?= -q -p no:cacheprovider -n 2 --dist worksteal --durations=15

# --no-compile: byte-compiling every file of TF, JAX and torch is ~50 s of the
# install (87 s -> 37 s here); Python compiles what it imports, once, on first use.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q --no-compile -e ".[test]"
	touch $@

.PHONY: install train test test-fast coverage docs
install: $(VENV)/.installed

train: $(VENV)/.installed
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(VENV)/bin/python -m training.train --config digits_sl_vit $(ARGS)

# The documentation site, strictly: a broken link or anchor, a page missing
# from the nav or an API symbol that no longer exists fails it (seconds; the
# API pages are read from the sources, nothing imports TensorFlow).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d .site

# The docs first, then every backend even when one fails; fails if any did;
# prints each backend's wall time at the end.
test: $(VENV)/.installed docs
	@failed=""; times=""; for backend in $(BACKENDS); do \
		echo "=== pytest on KERAS_BACKEND=$$backend ==="; start=$$(date +%s); \
		KERAS_BACKEND=$$backend $(VENV)/bin/python -m pytest $(PYTEST_ARGS) $(COVERAGE_ARGS) tests || failed="$$failed $$backend"; \
		times="$$times $$backend=$$(( $$(date +%s) - start ))s"; \
	done; \
	echo "wall time per backend:$$times"; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi; \
	echo "all backends passed: $(BACKENDS)"

FAST_BACKEND ?= torch
test-fast: $(VENV)/.installed
	KERAS_BACKEND=$(FAST_BACKEND) $(VENV)/bin/python -m pytest $(PYTEST_ARGS) -m "not large" tests

coverage: $(VENV)/.installed
	@mkdir -p coverage
	$(MAKE) test COVERAGE_ARGS='--cov=keras_smallvit --cov-report=term:skip-covered --cov-report=json:coverage/$$$$backend.json'
