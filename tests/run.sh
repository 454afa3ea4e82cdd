#!/usr/bin/env sh
# The whole test set-up on a fresh machine, then the tests (the README's test command).
# - Debian's chromium for the audit report's browser test (when missing and apt-get is usable);
# - the project's virtual environment with the test extra;
# - the local Triton server's own environment (.venv-triton, numpy<2) is created by the
#   tests themselves on first use (explainer.backends.triton.server).
set -eu
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
