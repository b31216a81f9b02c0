#!/bin/bash
# Entrypoint of the offline PostgreSQL image (deploy/images/postgres): on the
# first start (an empty PGDATA) initdb with the official image's variables,
# then run the server in the foreground, listening on every interface.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$auth" != trust ] && [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "paystream-postgres: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust (local use only)" >&2
    exit 1
  fi
  pwfile=
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  fi
  initdb -D "$PGDATA" -U "$user" --encoding=UTF8 --locale=C \
    --auth-local=trust --auth-host="$auth" ${pwfile:+--pwfile="$pwfile"} >/dev/null
  if [ -n "$pwfile" ]; then rm -f "$pwfile"; fi
  # Any address may connect (the compose network), with the same method.
  printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "paystream-postgres: initialised $PGDATA (user $user, database $db, host auth $auth)"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
