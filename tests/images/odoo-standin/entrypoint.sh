#!/bin/bash
# Berth's Odoo stand-in: the official odoo image's /entrypoint.sh contract, not Odoo's own file.
# HOST, PORT, USER, PASSWORD (or PASSWORD_FILE) default to db, 5432, odoo, odoo and become
# --db_host/--db_port/--db_user/--db_password for each one the config file ($ODOO_RC) does not set.
# `odoo ARGS`, `-- ARGS` or `-ARGS` wait up to 30 s for PostgreSQL, then exec odoo with the db
# arguments appended (exec: SIGTERM reaches odoo); anything else is exec'd as is.
set -e

if [ -v PASSWORD_FILE ]; then
  PASSWORD="$(< "$PASSWORD_FILE")"
fi
: "${HOST:=${DB_PORT_5432_TCP_ADDR:=db}}"
: "${PORT:=${DB_PORT_5432_TCP_PORT:=5432}}"
: "${USER:=${DB_ENV_POSTGRES_USER:=${POSTGRES_USER:=odoo}}}"
: "${PASSWORD:=${DB_ENV_POSTGRES_PASSWORD:=${POSTGRES_PASSWORD:=odoo}}}"

DB_ARGS=()
check_config() {
  if ! grep -qs -E "^\s*\b$1\b\s*=" "$ODOO_RC"; then
    DB_ARGS+=("--$1" "$2")
  fi
}
check_config db_host "$HOST"
check_config db_port "$PORT"
check_config db_user "$USER"
check_config db_password "$PASSWORD"

case "$1" in
  -- | odoo)
    shift
    if [[ "$1" == "scaffold" ]]; then
      exec odoo "$@"
    fi
    wait-for-psql.py "${DB_ARGS[@]}" --timeout=30
    exec odoo "$@" "${DB_ARGS[@]}"
    ;;
  -*)
    wait-for-psql.py "${DB_ARGS[@]}" --timeout=30
    exec odoo "$@" "${DB_ARGS[@]}"
    ;;
  *)
    exec "$@"
esac
