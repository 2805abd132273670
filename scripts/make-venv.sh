#!/usr/bin/env bash
# Create the project's virtual environment. On a bare Debian the interpreter may lack the
# venv/ensurepip module (package python3-venv): install it when we are root, else say what to do.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "galacto needs Python >= 3.11; '$python' is $("$python" --version 2>&1)" >&2
    exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv" || \
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "the venv module is missing: install python3-venv (as root: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
