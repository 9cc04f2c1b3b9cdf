# Two commands for a fresh clone: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv with Python 3.11 (falls back to python3) and install the package.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned on this path: 2.13.0 is a CPU wheel here; an unpinned torch pulls a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-deploy demo test bench clean

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

demo: install
	$(PY) -m radfm.demo

test: install install-deploy
	RADFM_DEPLOY_PYTHON=$(abspath $(DEPLOY_VENV))/bin/python $(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .pytest_cache
