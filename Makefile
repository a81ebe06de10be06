# make demo / make test each set up .venv on their own: a fresh machine needs only Python 3.11.
# .venv holds exactly the versions in requirements.lock (hash-checked); a changed lock rebuilds it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LATEST := .venv-latest

.PHONY: install demo test test-all test-latest lint format lock clean

# uv (tools.lock) installs the lock: the same hash-checked wheels as pip, in parallel. Every
# module is compiled at install: where PYTHONDONTWRITEBYTECODE is set nothing else would, and
# each test process would compile TensorFlow again.
$(STAMP): pyproject.toml $(LOCK) tools.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r tools.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --no-deps \
		--compile-bytecode -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/unetq study --preset quick --out runs/quick

# The fast tier: unit tests and the quick integration tests (a few minutes on 2 cores). Tests
# marked `slow`, or using a fixture that runs a whole study (tests/conftest.py), are left out.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

# Everything, the slow tier too (CI runs this), with the 25 slowest tests listed at the end.
test-all: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q --durations=25

# The newest versions pyproject's ranges allow (no lock), so drift is seen here before users meet it.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade -e ".[test,ray,mlflow]"
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/freeze.txt
	$(LATEST)/bin/python -m pytest -q

# Re-resolve the lock from pyproject's ranges with pip-tools: pip's own resolver, so the lock
# holds what pip would pick on Python 3.11 / Linux x86_64. pip-tools lives in a venv of its own
# (it pulls in click, which unetq must not rely on).
LOCK_TOOLS := .venv-lock
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/pip install --quiet "pip-tools==7.6.2")
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile pyproject.toml --all-extras \
		--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--upgrade --quiet -o $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) $(LOCK_TOOLS) runs .pytest_cache .ruff_cache
