# Both targets bootstrap .venv from scratch with plain `python3 -m venv` + pip when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.consentkit-installed

.PHONY: demo test soak bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "consentkit needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e ".[postgres,ed25519]" --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/consentkit demo

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m mypy --strict
	$(BIN)/python -m ruff check src tests bench examples

# The model-based test of the consent rules with many examples per store (see the test module).
soak: $(STAMP)
	CONSENTKIT_SOAK_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/test_rules_state_machine.py

# The store benches (issue 14) and the topics bench (issue 15) exit 1 when a target is missed;
# the leading "-" lets the others run anyway.  bench_postgres.py needs a scratch database in
# CONSENTKIT_TEST_POSTGRES_DSN (bench_topics.py runs on it too when it is set); the 1M-contact
# runs are in each bench's docstring.
bench: $(STAMP)
	-$(BIN)/python bench/bench_sqlite.py --contacts 100000
	-@if [ -n "$$CONSENTKIT_TEST_POSTGRES_DSN" ]; then \
		echo "$(BIN)/python bench/bench_postgres.py --contacts 100000"; \
		$(BIN)/python bench/bench_postgres.py --contacts 100000; \
	else \
		echo "bench/bench_postgres.py skipped: set CONSENTKIT_TEST_POSTGRES_DSN to a scratch database"; \
	fi
	-$(BIN)/python bench/bench_topics.py --contacts 100000
	$(BIN)/python bench/bench_keywords.py
	$(BIN)/python bench/bench_inbound.py
	$(BIN)/python bench/bench_trends.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
