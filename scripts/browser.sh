# shellcheck shell=bash
# Sourced by scripts/test: what the browser test (tests/it/presign.rs,
# a_browser_uploads_a_real_photo_through_the_example_page) needs: Debian's chromium (apt, from
# scripts/deps.sh) and Playwright's Python client in a venv, driving that chromium (Playwright's
# own browser download is never used).
#
#   source scripts/browser.sh   # installs playwright into target/browser-venv if needed and
#                               # exports RESIZEQ_BROWSER_PYTHON and RESIZEQ_CHROMIUM
#
# With RESIZEQ_BROWSER_DEFER=1 it only defines the functions (scripts/test installs in the
# background, then calls resizeq_browser_setup). Knobs: RESIZEQ_BROWSER_VENV (default
# target/browser-venv), RESIZEQ_CHROMIUM (default /usr/bin/chromium).

RESIZEQ_PLAYWRIGHT_VERSION="1.65.2"

# Installs playwright into the venv unless that exact version is already there.
resizeq_browser_install() {
  local venv=$1
  if [[ -x "$venv/bin/python" ]] &&
    "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("playwright") != sys.argv[1])' \
      "$RESIZEQ_PLAYWRIGHT_VERSION" 2>/dev/null; then
    return 0
  fi
  printf '==> installing playwright==%s into %s\n' "$RESIZEQ_PLAYWRIGHT_VERSION" "$venv"
  local python
  python=$(command -v python3 || command -v python) || {
    echo "browser: no python3 found to create $venv" >&2
    return 1
  }
  "$python" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "playwright==$RESIZEQ_PLAYWRIGHT_VERSION" || {
    echo "browser: pip install playwright==$RESIZEQ_PLAYWRIGHT_VERSION failed" >&2
    return 1
  }
}

# Installs (if needed) and exports what tests/it/presign.rs looks for.
resizeq_browser_setup() {
  local venv=${RESIZEQ_BROWSER_VENV:-$PWD/target/browser-venv}
  resizeq_browser_install "$venv" || return 1
  export RESIZEQ_BROWSER_PYTHON="$venv/bin/python"
  export RESIZEQ_CHROMIUM="${RESIZEQ_CHROMIUM:-/usr/bin/chromium}"
  [[ -x "$RESIZEQ_CHROMIUM" ]] || {
    echo "browser: $RESIZEQ_CHROMIUM is missing (apt-get install chromium)" >&2
    return 1
  }
  printf '==> browser test: %s, playwright %s\n' \
    "$("$RESIZEQ_CHROMIUM" --version 2>/dev/null)" "$RESIZEQ_PLAYWRIGHT_VERSION"
}

[[ -n "${RESIZEQ_BROWSER_DEFER:-}" ]] || resizeq_browser_setup
