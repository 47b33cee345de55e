# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench clean

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

# Start the embedded stack, catalog FOLDER (default: sample photos) and report.
demo: $(INSTALLED)
	$(VENV)/bin/archive demo $(FOLDER) $(DEMO_ARGS)

# Run the whole test suite against local PostgreSQL and Redis.
test: $(INSTALLED)
	scripts/system-packages.sh
	scripts/ensure-services.sh
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
