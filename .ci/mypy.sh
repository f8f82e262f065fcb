#!/usr/bin/env bash
# mypy cannot see continuum_py.adapters through setuptools' editable finder
# (adapters/ is mapped into the package by package-dir). Build the installed
# layout as a tree of symlinks and check that, strictly.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
ln -s "$root/continuum_py" "$tree/continuum_py_src"
mkdir "$tree/continuum_py"
for f in "$root"/continuum_py/*; do ln -s "$f" "$tree/continuum_py/"; done
ln -s "$root/adapters" "$tree/continuum_py/adapters"
rm "$tree/continuum_py_src"
cd "$tree"
MYPY="mypy"; [ -x "$root/.venv/bin/mypy" ] && MYPY="$root/.venv/bin/mypy"
"$MYPY" --config-file "$root/pyproject.toml" -p continuum_py "$@"
"$MYPY" --config-file "$root/pyproject.toml" "$root/tests/typing"
