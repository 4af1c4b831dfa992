#!/usr/bin/env bash
# On the GPU machine, from the project root, after `source .device-stage/install.sh` (../shared/device/README.md):
# install this checkout into the image's Python as a user would (its pytest11 entry point registers the plugin),
# once per machine. Where that is impossible, load the plugin by name instead.
if ! python3 -c "import importlib.metadata as m; m.version('pytest-rfdetr-latency')" >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/tmp/setup-pip.log 2>&1 \
    || { echo "editable install failed (see /tmp/setup-pip.log); loading the plugin with -p"; \
         export PYTEST_ADDOPTS="-p pytest_rfdetr_latency.plugin ${PYTEST_ADDOPTS:-}"; }
fi
python3 -c "import importlib.metadata as m; print('pytest-rfdetr-latency', m.version('pytest-rfdetr-latency'))" \
  2>/dev/null || true
