# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo_output
EXP ?=
MATERIAL ?= MoS2
DEMO_CONFIG ?= configs/mos2_bilayer_slip.yaml
DEMO_N ?= 256

.PHONY: demo test install bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

# The main job on the built-in example experiment (a digital twin); point it at your own
# micrographs with e.g. `make demo EXP="../shared/data/experimental/*.tif"`.
demo: $(STAMP)
	@set -e; exp="$(EXP)"; \
	if [ -z "$$exp" ]; then \
		$(BIN)/factory example --out $(DEMO_DIR)/experiment; \
		exp=$(DEMO_DIR)/experiment/example_mos2_haadf.tif; \
	fi; \
	$(BIN)/factory fit-style $$exp --method parametric --material $(MATERIAL) --calibrate --config $(DEMO_CONFIG) --out $(DEMO_DIR)/style -q; \
	$(BIN)/factory generate --config $(DEMO_CONFIG) --style $(DEMO_DIR)/style --n $(DEMO_N) --size 256 \
		--shard-size 64 --keep-clean --out $(DEMO_DIR)/dataset --overwrite -q; \
	$(BIN)/factory validate $(DEMO_DIR)/dataset; \
	$(BIN)/factory preview $(DEMO_DIR)/dataset --out $(DEMO_DIR)/preview.png; \
	$(BIN)/factory compare $$(echo $$exp | cut -d' ' -f1) $(DEMO_DIR)/dataset/shards/shard-00000.h5:clean \
		$(DEMO_DIR)/dataset/shards/shard-00000.h5 --material $(MATERIAL) --calibrate --out $(DEMO_DIR)/compare.png
	@echo ""
	@echo "Demo outputs:"
	@echo "  style bundle     $(abspath $(DEMO_DIR))/style  (contrast.png: the column contrast it calibrated; report.png: how real its images look; detector.png: the detector response)"
	@echo "  dataset          $(abspath $(DEMO_DIR))/dataset  (manifest.json, README.md dataset card with preview.png, croissant.json + samples.csv, shards/)"
	@echo "  preview          $(abspath $(DEMO_DIR))/preview.png"
	@echo "  comparison       $(abspath $(DEMO_DIR))/compare.png"

# Every exit code but 0 fails, 5 (no tests collected) included; under CI=true a skipped test fails too
# (tests/conftest.py), so a missing ../shared or a broken install cannot pass silently.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_translate.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/style_real_data.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on any warning.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
