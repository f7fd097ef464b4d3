#!/usr/bin/env bash
# make test: every test, in two phases against one cluster.
#   1. the unit tests and the integration tests in HPO_TEST_WORKERS parallel pytest workers (4 unless
#      set; each integration test has a namespace of its own, and a worker takes a test module, or all
#      the real node's tests, whole);
#   2. the tests marked `alone`, one at a time: they stop or freeze the control plane's processes,
#      which would fail every test running beside them.
# HPO_TEST_WORKERS=0 runs everything in one process, in file order, as pytest alone would.
# Arguments are pytest's (make test PYTEST_ARGS=...), given to both phases; a phase with nothing
# selected is fine, both empty is a failure ("no tests ran").
# Unless HPO_KUBECONFIG names a cluster, the local control plane is started first (hack/cluster.sh)
# and stopped at the end if this run started it (HPO_KEEP_CLUSTER=1 keeps it).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
py=${PY:-.venv/bin/python}
workers=${HPO_TEST_WORKERS:-4}

started=
stop_what_we_started() {
  if [ -n "$started" ] && [ -z "${HPO_KEEP_CLUSTER:-}" ]; then hack/cluster.sh down >/dev/null; fi
}
trap stop_what_we_started EXIT
if [ -z "${HPO_KUBECONFIG:-}" ] && ! hack/cluster.sh status >/dev/null 2>&1; then
  # (its own failures are the tests' to report: the kubeconfig fixture tries again and says why)
  if hack/cluster.sh up >/dev/null; then started=1; fi
fi

# pytest's exit 5 is "no tests were selected"; the run fails only if neither phase ran any.
run() {
  "$py" -m pytest "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then ran_none=$((ran_none + 1)); return 0; fi
  return "$rc"
}
ran_none=0
if [ "$workers" = 0 ]; then
  run "$@"
  rc=$?
  [ "$ran_none" -eq 1 ] && { echo "no tests ran" >&2; exit 1; }
  exit "$rc"
fi
run -n "$workers" --dist loadgroup -m "not alone" "$@"
parallel=$?
echo ">> the tests that run alone (marker alone), one at a time"
run -m alone "$@"
alone=$?
if [ "$ran_none" -eq 2 ]; then echo "no tests ran" >&2; exit 1; fi
if [ "$parallel" -ne 0 ] || [ "$alone" -ne 0 ]; then
  echo ">> failed: $([ "$parallel" -ne 0 ] && echo "the parallel phase (exit $parallel) ")$([ "$alone" -ne 0 ] && echo "the alone phase (exit $alone)")" >&2
  exit 1
fi
