#!/bin/sh
# PostgreSQL's first start: a database and role for extauth beside authentik's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$EXTAUTH_DB_PASSWORD" <<'SQL'
CREATE ROLE extauth LOGIN PASSWORD :'password';
CREATE DATABASE extauth OWNER extauth;
SQL
