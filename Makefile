# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DB ?= sqlite:///$(CURDIR)/.demo/gpu-supply.db
REFERENCE ?= ../shared/reference

.PHONY: demo test bench snapshot notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p .demo
	@echo "== gpu-supply catalog info"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply catalog info
	@echo; echo "== gpu-supply compare --gpu H100 --gpus 8 --hours 720"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply compare --gpu H100 --gpus 8 --hours 720
	@echo; echo "== gpu-supply compare --gpu H100 --gpus 64 --months 3 --currency CNY --geo cn,apac"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply compare --gpu H100 --gpus 64 --months 3 --currency CNY --geo cn,apac
	@echo; echo "== gpu-supply offers --min-gpu-memory 80 --geo eu --pricing on_demand --limit 10"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply offers --min-gpu-memory 80 --geo eu --pricing on_demand --limit 10
	@echo; echo "== gpu-supply refresh --provider idc --idc examples/idc-offers.yaml   (live refresh; clouds need credentials)"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply refresh --provider idc --idc examples/idc-offers.yaml
	@echo; echo "== gpu-supply plan examples/workloads.yaml"
	@GPU_SUPPLY_DB=$(DEMO_DB) $(BIN)/gpu-supply plan examples/workloads.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/optimizer.py
	$(BIN)/python benchmarks/refresh.py
	$(BIN)/python benchmarks/executor.py

# Jupyter on the project's environment (notebooks/README.md); `make test` runs every notebook.
notebooks: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,notebooks]'
	$(BIN)/jupyter lab notebooks/

# Rebuild the embedded snapshot from public SkyPilot-format catalogs with the project's own importer.
snapshot: $(STAMP)
	$(BIN)/python -m pricing.snapshot build --reference $(REFERENCE) --idc examples/idc-offers.yaml

clean:
	rm -rf $(VENV) .demo .pytest_cache
