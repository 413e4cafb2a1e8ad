# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo_output
EXP_DIR := ../shared/data/experimental

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
	@if [ -d $(EXP_DIR) ]; then \
		$(BIN)/factory fit-style $(EXP_DIR)/mos2_60kv_a.tif $(EXP_DIR)/mos2_60kv_b.tif --material MoS2 --calibrate \
			--out $(DEMO_DIR)/style_mos2_60kv -q && \
		$(BIN)/factory simulate --config mos2_monolayer --n 16 --size 384 --seed 0 -q \
			--out $(DEMO_DIR)/mos2_monolayer.h5 && \
		$(BIN)/factory translate --style $(DEMO_DIR)/style_mos2_60kv --in $(DEMO_DIR)/mos2_monolayer.h5 \
			--out $(DEMO_DIR)/mos2_monolayer_styled.h5 --resample -q && \
		$(BIN)/factory compare $(EXP_DIR)/mos2_60kv_a.tif $(DEMO_DIR)/mos2_monolayer_styled.h5:clean \
			$(DEMO_DIR)/mos2_monolayer_styled.h5 --material MoS2 --calibrate \
			--out $(DEMO_DIR)/compare.png; \
	else echo "(../shared/data/experimental not found: skipping the style demo)"; fi
	@echo ""
	@echo "Demo outputs:"
	@ls -1d $(abspath $(DEMO_DIR))/* | sed 's/^/  /'

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_translate.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/style_real_data.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
