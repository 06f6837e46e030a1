#!/usr/bin/env bash
# Run a command (e.g. pytest) beside a throwaway PostgreSQL server, then stop the server.
#
#   scripts/postgres-test.sh .venv/bin/pytest [ARGS...]
#
# Installs Debian's `postgresql` if it is missing (apt-get, as root or with sudo), initdb's a
# cluster in a temporary folder (as the `postgres` user when run as root: the server refuses to
# run as root), starts it on a Unix socket in that folder only (no TCP port, nothing to clash
# with), exports CHESTX_TEST_POSTGRES_URL for the command, and stops the server and removes the
# folder on exit, whether the command passed, failed or was interrupted. Where PostgreSQL can't
# be installed or started it says so loudly and runs the command anyway: the PostgreSQL tests
# then skip with the same message. The command's exit status is the script's.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive

warn() {
  printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  printf '!!! %s\n' "$@" >&2
  printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

run_without() {
  local reason=$1
  shift
  warn "PostgreSQL is NOT available: $reason" \
    "The PostgreSQL variants of the study-store tests will be SKIPPED."
  unset CHESTX_TEST_POSTGRES_URL
  export CHESTX_TEST_POSTGRES_SKIP_REASON="$reason"
  "$@"
  exit $?
}

find_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

bindir=$(find_bindir)
if [ -z "$bindir" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "scripts/postgres-test.sh: installing Debian's postgresql..." >&2
  if $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 \
         && $sudo apt-get install -y -qq \
              --no-install-recommends postgresql >/dev/null 2>&1; }; then
    bindir=$(find_bindir)
  fi
  [ -n "$bindir" ] || run_without "apt-get could not install postgresql" "$@"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chestx-pg.XXXXXX")
as_server=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres 2>/dev/null
  chown postgres: "$tmp"
  as_server=(runuser -u postgres --)
fi

cleanup() {
  "${as_server[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "${as_server[@]}" "$bindir/initdb" -D "$tmp/data" -U chestx --auth=trust -E UTF8 \
    --locale=C --no-sync >"$tmp/initdb.log" 2>&1; then
  cat "$tmp/initdb.log" >&2
  run_without "initdb failed (see above)" "$@"
fi
options="-c listen_addresses= -k $tmp -p 5432 -c fsync=off -c synchronous_commit=off"
options+=" -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
if ! "${as_server[@]}" "$bindir/pg_ctl" -D "$tmp/data" -o "$options" -l "$tmp/server.log" \
    -w -t 30 start >/dev/null; then
  cat "$tmp/server.log" >&2
  run_without "the PostgreSQL server did not start (see above)" "$@"
fi
version=$("$bindir/postgres" --version)
export CHESTX_TEST_POSTGRES_URL="postgresql+psycopg://chestx@/postgres?host=$tmp&port=5432"
echo "scripts/postgres-test.sh: $version on $tmp/.s.PGSQL.5432 for: $*" >&2
"$@"
