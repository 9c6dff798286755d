# shellcheck shell=bash
# Sourced by scripts/test: a local moto server (S3 + SQS emulator) for the tests in tests/it/.
#
#   source scripts/moto.sh     # installs moto into target/moto-venv if needed, starts it,
#                              # exports RESIZEQ_TEST_ENDPOINT and test credentials, and
#                              # stops it (by PID) when the sourcing shell exits
#
# If RESIZEQ_TEST_ENDPOINT is already set (a moto or LocalStack you run yourself), nothing is
# installed or started. Knobs: RESIZEQ_MOTO_VENV (default target/moto-venv),
# RESIZEQ_MOTO_LOG (default target/moto.log).

RESIZEQ_MOTO_VERSION="5.2.5"
RESIZEQ_MOTO_PID=""

# Installs moto[server] into the venv unless that exact version is already there.
resizeq_moto_install() {
  local venv=$1
  if [[ -x "$venv/bin/python" ]] &&
    "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("moto") != sys.argv[1])' \
      "$RESIZEQ_MOTO_VERSION" 2>/dev/null; then
    return 0
  fi
  printf '==> installing moto[server]==%s into %s\n' "$RESIZEQ_MOTO_VERSION" "$venv"
  local python
  python=$(command -v python3 || command -v python) || {
    echo "moto: no python3 found to create $venv" >&2
    return 1
  }
  "$python" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "moto[server]==$RESIZEQ_MOTO_VERSION" || {
    echo "moto: pip install moto[server]==$RESIZEQ_MOTO_VERSION failed" >&2
    return 1
  }
}

# Kills the server started by resizeq_moto_start (by its PID, nothing else) and waits for it.
resizeq_moto_stop() {
  local pid=$RESIZEQ_MOTO_PID
  [[ -n "$pid" ]] || return 0
  RESIZEQ_MOTO_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  return 0
}

resizeq_moto_start() {
  if [[ -n "${RESIZEQ_TEST_ENDPOINT:-}" ]]; then
    printf '==> moto: using RESIZEQ_TEST_ENDPOINT=%s\n' "$RESIZEQ_TEST_ENDPOINT"
    return 0
  fi
  local venv=${RESIZEQ_MOTO_VENV:-$PWD/target/moto-venv}
  local log=${RESIZEQ_MOTO_LOG:-$PWD/target/moto.log}
  resizeq_moto_install "$venv" || return 1
  mkdir -p "$(dirname "$log")"

  # The venv's python is the interpreter itself (a symlink to it, not a pyenv shim that
  # execs it), so $! below is the server's own PID.
  local python="$venv/bin/python"
  local port
  port=$("$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])') || return 1

  "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  RESIZEQ_MOTO_PID=$!
  # Chain onto any EXIT trap already set rather than replacing it.
  local previous
  previous=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT\$/\\1/")
  # shellcheck disable=SC2064 # expand $previous now, on purpose
  trap "resizeq_moto_stop${previous:+; $previous}" EXIT
  # A shell killed by a signal runs no EXIT trap unless the signal is trapped: turn INT and
  # TERM into exits (when nothing else traps them) so the server goes with it.
  [[ -n "$(trap -p INT)" ]] || trap 'exit 130' INT
  [[ -n "$(trap -p TERM)" ]] || trap 'exit 143' TERM

  local url="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 30))
  until "$python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()' "$url/moto-api/" 2>/dev/null; do
    if ! kill -0 "$RESIZEQ_MOTO_PID" 2>/dev/null; then
      echo "moto: the server exited during start-up; its log ($log):" >&2
      tail -n 20 "$log" >&2
      RESIZEQ_MOTO_PID=""
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "moto: not answering on $url/moto-api/ after 30 s; log: $log" >&2
      resizeq_moto_stop
      return 1
    fi
    sleep 0.2
  done

  export RESIZEQ_TEST_ENDPOINT="$url"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  printf '==> moto %s on %s (pid %s)\n' "$RESIZEQ_MOTO_VERSION" "$url" "$RESIZEQ_MOTO_PID"
}

# RESIZEQ_MOTO_DEFER=1: only define the functions (scripts/test installs moto in the
# background while it builds, then calls resizeq_moto_start).
[[ -n "${RESIZEQ_MOTO_DEFER:-}" ]] || resizeq_moto_start
