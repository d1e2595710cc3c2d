#!/usr/bin/env bash
# ./run.sh         set up .venv (first time) and run the pipeline (Ctrl-C stops it cleanly)
# ./run.sh test    run the test suite (everything but the bench and live markers)
# ./run.sh bench   run every benchmark (ring, wal, pipeline, decode, binance, instruments) and the soak tests
# ./run.sh <args>  anything else is passed to connector-pipeline, e.g. ./run.sh replay --help
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "run.sh: creating $VENV with $($PYTHON --version 2>&1)" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the project definition or the C speedup changed.
    local stamp="$VENV/.installed-$(cat pyproject.toml setup.py connector/binance/_scan.c | sha1sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "run.sh: installing the project and its test tools into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

setup
cmd=${1:-main}
case "$cmd" in
    test)
        shift
        exec "$VENV/bin/python" -m pytest -m "not bench and not live" "$@"
        ;;
    bench)
        shift
        "$VENV/bin/connector-pipeline" bench ring --json
        "$VENV/bin/connector-pipeline" bench wal --json
        "$VENV/bin/connector-pipeline" bench pipeline --json
        "$VENV/bin/connector-pipeline" bench decode --json
        "$VENV/bin/connector-pipeline" bench binance --json
        "$VENV/bin/connector-pipeline" bench instruments --json
        exec "$VENV/bin/python" -m pytest -m bench "$@"
        ;;
    main)
        # The pipeline on the built-in sources, in this terminal, until Ctrl-C
        # (which drains the rings into the WAL before exiting).
        shift || true
        exec "$VENV/bin/connector-pipeline" start --foreground --config config/default.toml "$@"
        ;;
    *)
        exec "$VENV/bin/connector-pipeline" "$@"
        ;;
esac
