#!/usr/bin/env sh
# The whole test set-up on a fresh machine, then the tests (the README's test command).
# - Debian's chromium for the audit report's browser test (when missing and apt-get is usable);
# - the project's virtual environment (editable, the CPU runtime and the test extra);
# - the local Triton server's own environment (numpy<2; platformdirs' user data folder or
#   $EXPLAINER_TRITON_VENV) is set up by the Triton tests before their first server
#   (explainer.backends.triton.server.ensure_venv, announced);
# - tests/test_install.py (marked slow) builds the wheel and installs it into a fresh
#   virtual environment outside the checkout (pip's cache is reused between runs).
set -eu
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
