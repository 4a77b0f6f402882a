#!/bin/sh
# Stand-in for the official postgres image's entrypoint: initialise PGDATA on first start with
# POSTGRES_USER / POSTGRES_PASSWORD(_FILE) / POSTGRES_DB, listen on all addresses with password
# auth (trust on the local socket, as the official image), then run the server as the postgres user (PostgreSQL refuses to run as root).
set -eu
# Like the official image: anything but `postgres` (e.g. `psql`, `pg_dump`, `sleep`) just runs.
if [ "${1:-}" != "postgres" ]; then
  exec "$@"
fi
shift
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "error: POSTGRES_PASSWORD is not set" >&2
  exit 1
fi
as_postgres() { runuser -u postgres -- "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k /run/postgresql" start >/dev/null
    PGPASSWORD=$POSTGRES_PASSWORD as_postgres createdb -h /run/postgresql -U "$POSTGRES_USER" -- "$POSTGRES_DB"
    as_postgres pg_ctl -D "$PGDATA" -w stop >/dev/null
  fi
fi
# setpriv execs in place (runuser would stay as PID 1 and not pass SIGTERM on to the server).
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
