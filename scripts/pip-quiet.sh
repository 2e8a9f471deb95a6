# Sourced by run.sh and test.sh (after VENV is set): pip without pages of output. pip writes to a
# temporary log; the log is printed in full, after the failing command, only when pip fails.
pip_quiet() {
  local log rc=0
  log="$(mktemp "${TMPDIR:-/tmp}/edgeagent-pip.XXXXXX")"
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "edgeagent: 'pip $*' failed (exit $rc); its output:" >&2
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}
