#!/usr/bin/env bash
# Install what the tests need, idempotently and quietly when it is already there.
set -euo pipefail

# Debian packages, each checked by what the tests run:
#   age       the format is checked against its CLI
#   zstd      the recovery script in docs/FORMAT.md uses it
#   postgresql  catalog and postgres-source tests run a throwaway server as the postgres user
#   prometheus  promtool checks deploy/prometheus/alerts.yml
#   attr, acl, libcap2-bin  getfattr/setfattr, getfacl/setfacl, setcap/getcap: the attribute
#               round-trip test (tests/it/attrs.rs) compares with them
need_apt=()
command -v age >/dev/null 2>&1 || need_apt+=(age)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v getfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v getfacl >/dev/null 2>&1 || need_apt+=(acl)
{ command -v setcap && command -v getcap; } >/dev/null 2>&1 || need_apt+=(libcap2-bin)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The S3 Object Lock tests run moto's S3 server (PyPI moto[server], pinned) from .venv-moto/:
# it implements versioning and Object Lock, which the in-process s3s server does not.
MOTO_VERSION=5.2.5
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moto_venv="$repo_root/.venv-moto"
if ! "$moto_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null \
   || [ ! -x "$moto_venv/bin/moto_server" ]; then
  echo "deps: installing moto[server]==$MOTO_VERSION into .venv-moto/ (pip)"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
