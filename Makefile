# token-direct: `make demo` runs an end-to-end example, `make test` runs the offline test suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Install torch on its own first, pinned: a bare `pip install torch` can pull a multi-GB CUDA build.
# Override for another build, e.g. make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/<cuda tag>"
TORCH  ?= torch==2.13.0

.PHONY: install system demo lint test clean

install: system $(STAMP)

# Debian packages the project needs, each with a command or file (a pattern) that shows it is there: poppler-utils
# (pdftoppm turns PDF pages into images); the fonts text queries are drawn with (core/fonts.py): DejaVu Sans, Noto
# for the scripts DejaVu Sans lacks, Noto CJK; and FriBiDi, which Pillow's raqm layout loads to lay out
# right-to-left text (core/bidi.py).
SYSTEM_PACKAGES := \
	poppler-utils=pdftoppm \
	libfribidi0=/usr/lib/*/libfribidi.so.0 \
	fonts-dejavu-core=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
	fonts-noto-core=/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf \
	fonts-noto-cjk=/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

# Installs what is missing with apt-get when run as root; otherwise stops with the command to run.
system:
	@missing=""; \
	for entry in $(SYSTEM_PACKAGES); do \
		what="$${entry#*=}"; \
		ls -d $$what >/dev/null 2>&1 || command -v "$$what" >/dev/null 2>&1 || missing="$$missing $${entry%%=*}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "error: missing Debian packages:$$missing (Debian/Ubuntu: sudo apt-get install$$missing)" >&2; \
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

# One test process per core (pytest-xdist): most tests run the command line or the model, each bound to a core.
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n auto

# Removes build and test leftovers; keeps .venv (apart from its stamp) and the data directory.
clean:
	rm -rf build dist *.egg-info .pytest_cache $(STAMP)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
