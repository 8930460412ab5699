#!/usr/bin/env bash
# The postgres image's entrypoint contract, as deploy/docker-compose.yml relies on it: on the first start
# (an empty $PGDATA) create the cluster with superuser $POSTGRES_USER and password $POSTGRES_PASSWORD,
# create the database $POSTGRES_DB, accept password logins from other containers; then run the server
# as the postgres user. Written for the stand-in (deploy/standins/README.md), not copied from upstream.
set -euo pipefail

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  : "${POSTGRES_PASSWORD:?is not set: the postgres image refuses to start without a superuser password}"
  echo "docker-entrypoint: initialising $PGDATA (superuser $user, database $db)"
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") -D "$PGDATA" \
    --encoding=UTF8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # A server on the socket only, so nothing connects before the database exists.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -q -c "create database \"$db\""
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "docker-entrypoint: ready to start"
fi

exec "$@"
