#!/usr/bin/env bash
# One entry point for people and CI. Usage: ./dev.sh {setup|demo|test|lint|bench} [args...]
#   setup  create .venv and install both packages (editable) with pinned versions
#   demo   setup, then run the main job on the built-in default (pipelines/demo)
#   test   setup, then run the test suite
#   lint   ruff
#   bench  benchmarks printing ratios against baselines measured in the same run
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
venv="$root/.venv"
py="$venv/bin/python"

setup() {
  local stamp="$venv/.installed"
  local want
  want="$(cat constraints.txt requirements-dev.txt packages/*/pyproject.toml | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  [[ -x "$py" ]] || python3 -m venv "$venv"
  echo "[setup] installing into $venv (pinned by constraints.txt; first time takes a few minutes)" >&2
  "$py" -m pip install -q --upgrade pip >&2
  "$py" -m pip install -q -c constraints.txt \
    -e "packages/xrdsynth[s3]" -e "packages/xrdmodels[s3]" -r requirements-dev.txt >&2
  echo "$want" > "$stamp"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$venv/bin/python" pipelines/demo/run.py "$@" ;;
  test)  setup; exec "$py" -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal "$@" ;;
  lint)  setup; exec "$venv/bin/ruff" check packages tests pipelines "$@" ;;
  bench) setup; exec "$py" pipelines/bench.py "$@" ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
