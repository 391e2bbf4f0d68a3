#!/bin/sh
# JupyterLab on notebooks/, listening on 127.0.0.1 only, without opening a browser; it prints
# the URL to open, with its token. `make notebooks` runs this (with .venv's Python), and so
# does tests/test_notebooks_server.py (with the test's Python and a free port).
#
# Usage: sh .ci/jupyterlab.sh PYTHON [PORT]   PORT: 8888 by default (the next free one if taken)
set -eu
python=$1
port=${2:-8888}
cd "$(dirname "$0")/.."
# Jupyter refuses to start as root unless told; containers and CI machines often are root
if [ "$(id -u)" = 0 ]; then set -- --allow-root; else set --; fi
exec "$python" -m jupyterlab --no-browser "$@" \
  --ServerApp.ip=127.0.0.1 --ServerApp.port="$port" --ServerApp.root_dir=notebooks
