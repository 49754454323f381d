# token-direct: `make demo` runs an end-to-end example, `make test` runs the offline test suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Install torch on its own first, pinned: a bare `pip install torch` can pull a multi-GB CUDA build.
# Override for another build, e.g. make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/<cuda tag>"
TORCH  ?= torch==2.13.0

.PHONY: install poppler demo lint test clean

install: poppler $(STAMP)

# pdftoppm (poppler-utils) turns PDF pages into images.
poppler:
	@if ! command -v pdftoppm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing poppler-utils (pdftoppm)"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils; \
		else \
			echo "error: pdftoppm not found; install poppler-utils (Debian/Ubuntu: sudo apt-get install poppler-utils)" >&2; \
			exit 1; \
		fi; \
	fi

# Re-run only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[test]"
	@touch $@

demo: install
	$(BIN)/tokendirect demo

# ruff (configured in pyproject.toml): lint and format check, then the offline test suite.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Removes build and test leftovers; keeps .venv (apart from its stamp) and the data directory.
clean:
	rm -rf build dist *.egg-info .pytest_cache $(STAMP)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
