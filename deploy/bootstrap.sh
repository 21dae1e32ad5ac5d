#!/usr/bin/env bash
# Set up MIRAGE from nothing into ./.venv (idempotent; fast when already done).
#   bash deploy/bootstrap.sh          runtime + dev/test dependencies
#   bash deploy/bootstrap.sh --browser  also Debian's chromium + chromedriver (dashboard browser tests; needs root)
# torch==2.13.0 is installed first so that nothing later pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
want_browser=0
for a in "$@"; do
  case "$a" in
    --browser) want_browser=1 ;;
    *) echo "bootstrap: unknown option $a" >&2; exit 2 ;;
  esac
done
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mirage-installed
hash=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$hash" > "$stamp"
fi
if [ "$want_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "bootstrap: could not install chromium; browser tests will skip" >&2
  else
    echo "bootstrap: chromium not installed (needs root + apt); browser tests will skip" >&2
  fi
fi
