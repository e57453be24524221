# Two commands do all set-up on a fresh machine:
#   make train   builds the environment, trains SL-ViT (+SATA, CB) on the offline digits data, exports it (training/configs/digits_sl_vit.py)
#   make test    builds the environment, runs the test suite once per backend
PYTHON ?= python3
VENV ?= .venv
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?= -q -p no:cacheprovider -n 2 --dist worksteal --durations=15

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	touch $@

.PHONY: install train test
install: $(VENV)/.installed

train: $(VENV)/.installed
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(VENV)/bin/python -m training.train --config digits_sl_vit $(ARGS)

# Runs every backend even when one fails, then fails if any did.
test: $(VENV)/.installed
	@failed=""; for backend in $(BACKENDS); do \
		echo "=== pytest on KERAS_BACKEND=$$backend ==="; \
		KERAS_BACKEND=$$backend $(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests || failed="$$failed $$backend"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi; \
	echo "all backends passed: $(BACKENDS)"
