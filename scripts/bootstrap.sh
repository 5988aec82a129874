#!/usr/bin/env bash
# Create (once) and print the path of the cached virtual environment that
# `make demo` and `make test` run in.  The environment lives outside the
# checkout, keyed by a hash of the dependency files, so a fresh clone (CI)
# reuses it instead of downloading torch again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BDR_AVALANCHE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bdr-avalanche}"
key="$(cat "$root/setup.cfg" "$root/requirements/constraints.txt" | sha256sum | cut -c1-16)"
venv="${BDR_AVALANCHE_VENV:-$cache/venv-$key}"
python="${PYTHON:-python3}"

if [ ! -f "$venv/.complete" ]; then
    echo "bootstrap: creating $venv (first use only; downloads torch)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    log="$venv/install.log"
    if ! { "$venv/bin/python" -m pip install --upgrade pip setuptools wheel &&
           "$venv/bin/python" -m pip install -c "$root/requirements/constraints.txt" \
               -e "$root[dev]"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "bootstrap: installation failed; full log in $log" >&2
        exit 1
    fi
    touch "$venv/.complete"
fi
# Point the (cheap, dependency-free) editable install at this checkout.
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" \
    >/dev/null 2>&1 || {
    echo "bootstrap: could not install the package from $root" >&2
    exit 1
}
echo "$venv"
