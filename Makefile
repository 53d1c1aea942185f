# The README's two commands: `make demo` and `make test`. Both install what they need first.
# torch is pinned here (and installed before the project) so pip takes the local CPU build
# instead of pulling a multi-GB CUDA one; users elsewhere get the normal torch>= range.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[all,dev]" "$(TORCH_PIN)"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/build_demo.py demo
	@echo "--- a model that passes ---------------------------------------------------"
	$(VENV)/bin/modelgate check demo/good.pt2
	@echo "--- a model with the classic deployment bugs (the gate fails: exit 1) -----"
	@$(VENV)/bin/modelgate check demo/bad.pt2 demo/bad_state_dict.pt; \
	  echo "(modelgate exited $$?: 0 passed, 1 failed, 2 usage or config error)"
	@echo "--- a checkpoint (weights only) built from the repository's code by a recipe ----"
	@cd demo/repo && $(abspath $(VENV))/bin/modelgate check checkpoints/; \
	  echo "(modelgate exited $$?)"

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install  # the pickle scanner against the peer-suite corpus (about 2 minutes)
	$(PY) benchmarks/bench_pickles.py

clean:
	rm -rf $(VENV) demo .pytest_cache
