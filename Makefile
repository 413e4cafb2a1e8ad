# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo_output

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/factory simulate --config configs/mos2_bilayer_slip.yaml --n 16 --seed 0 \
		--out $(DEMO_DIR)/mos2_bilayer_slip.h5
	$(BIN)/factory simulate --config configs/wsse_janus_twisted_bilayer.yaml --n 16 --seed 0 \
		--out $(DEMO_DIR)/wsse_janus_twisted_bilayer.h5
	@echo ""
	@echo "Demo outputs:"
	@ls -1 $(abspath $(DEMO_DIR))/* | sed 's/^/  /'

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
