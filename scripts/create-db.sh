#!/usr/bin/env bash
# Create the reflector database and its user on a local MySQL/MariaDB and load schema.sql
# (reflector.go's installation notes ask for this by hand). Safe to run again: nothing is dropped.
#
# Settings (environment, or `make db NAME=value`):
#   DB_NAME (reflector)  DB_USER (reflector)  DB_PASSWORD (reflector)
#   DB_USER_HOSTS ("localhost 127.0.0.1 ::1")  hosts the account may connect from
#   MYSQL_HOST (unix socket)  MYSQL_PORT (3306)  MYSQL_ADMIN_USER (root)  MYSQL_ADMIN_PASSWORD (empty)
set -euo pipefail
cd "$(dirname "$0")/.."

DB_NAME="${DB_NAME:-reflector}"
DB_USER="${DB_USER:-reflector}"
DB_PASSWORD="${DB_PASSWORD:-reflector}"
DB_USER_HOSTS="${DB_USER_HOSTS:-localhost 127.0.0.1 ::1}"
MYSQL_ADMIN_USER="${MYSQL_ADMIN_USER:-root}"

die() { echo "create-db: $*" >&2; exit 1; }
[[ "$DB_NAME" =~ ^[A-Za-z0-9_]+$ ]] || die "DB_NAME must be letters, digits and _ only, got '$DB_NAME'"
[[ "$DB_USER" =~ ^[A-Za-z0-9_]+$ ]] || die "DB_USER must be letters, digits and _ only, got '$DB_USER'"
for h in $DB_USER_HOSTS; do
  [[ "$h" =~ ^[A-Za-z0-9_.:%-]+$ ]] || die "bad host '$h' in DB_USER_HOSTS"
done
client="$(command -v mariadb || command -v mysql || true)"
[ -n "$client" ] || die "no mariadb or mysql client found (apt-get install mariadb-client)"

args=(--connect-timeout=5 --user="$MYSQL_ADMIN_USER")
[ -n "${MYSQL_HOST:-}" ] && args+=(--host="$MYSQL_HOST" --protocol=TCP)
[ -n "${MYSQL_PORT:-}" ] && args+=(--port="$MYSQL_PORT")
export MYSQL_PWD="${MYSQL_ADMIN_PASSWORD:-}"

# SQL string literal of the password: double the quotes and backslashes.
pw="${DB_PASSWORD//\\/\\\\}"
pw="${pw//\'/\'\'}"

sql="CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;"
for h in $DB_USER_HOSTS; do
  sql+="CREATE USER IF NOT EXISTS '$DB_USER'@'$h' IDENTIFIED BY '$pw';"
  sql+="GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'$h';"
done
"$client" "${args[@]}" -e "$sql" || die "cannot create the database or user (is the server up, are the admin credentials right?)"
"$client" "${args[@]}" "$DB_NAME" < schema.sql || die "cannot load schema.sql into $DB_NAME"

echo "database $DB_NAME ready; config.json: \"db_conn\": \"$DB_USER:<password>@tcp(${MYSQL_HOST:-localhost}:${MYSQL_PORT:-3306})/$DB_NAME\""
