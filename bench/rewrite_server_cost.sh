#!/usr/bin/env bash
# bench/rewrite_server_cost.sh -- what a rewritten INSERT costs PostgreSQL itself.
#
#   bench/rewrite_server_cost.sh [BUILD_DIR] [N]      (default: build, 400)
#
# Instructions per statement executed by a PostgreSQL 15 backend (single-user
# mode under callgrind, so the figures do not depend on machine load), for a
# one-row INSERT into policies in four shapes, sent as literal statements
# ("simple": parsed and planned every time) and as EXECUTE of a prepared
# statement ("prepared"):
#
#   plain      the client's INSERT, no workspace_id
#   subq       workspace_id = (SELECT workspace_id FROM public.tenants WHERE id = $1)
#              (the shape the issue measured; it cannot raise R3 by itself)
#   helper     tenantguard's R1 rewrite: tenantguard.ws_derive(...), as rwtool writes it
#   hybrid     COALESCE(<subq>, tenantguard.ws_derive(...)): the helper only on the error path
#
# The per-statement figure is (cost of 5N statements - cost of N) / 4N, so the
# backend's start-up and shutdown cancel out. Needs initdb/postgres 15 and valgrind;
# run as root (it runs PostgreSQL as the postgres account) or as a normal user.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-400}
pgbin=${TG_PG_BIN:-/usr/lib/postgresql/15/bin}
rwtool="$build/tests/tools/rwtool"
[ -x "$rwtool" ] || { echo "missing $rwtool: run scripts/build" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }

dir=$(mktemp -d)
chmod 777 "$dir"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

as_pg "$pgbin/initdb" -D "$dir/data" -U postgres --auth-local=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null 2>&1
cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir'
port = 55499
fsync = off
synchronous_commit = off
EOF
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p 55499 -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE app"
psql_ -d app -f sql/demo_schema.sql
for t in policies policy_versions backup_sets backup_items restore_runs backup_schedules inventory_items \
         inventory_links entra_groups findings entra_role_definitions tenant_permissions; do
    psql_ -d app -c "ALTER TABLE $t ADD COLUMN workspace_id bigint NULL REFERENCES workspaces (id)"
done
psql_ -d app -c "CREATE UNIQUE INDEX ON tenants (id, workspace_id)"
"$rwtool" --render-helpers | psql_ -d app 2>/dev/null
psql_ -d app -c "INSERT INTO workspaces (id, name) VALUES (1, 'w1'), (2, 'w2');
                 INSERT INTO tenants (id, workspace_id, name) VALUES (3, 2, 't3'), (4, 1, 't4')"
as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null

helper=$(echo "INSERT INTO policies (tenant_id, name) VALUES (\$1, 'bench')" | "$rwtool" --extended |
         python3 -c 'import json, sys; print(json.load(sys.stdin)["text"])')
declare -A shape=(
    [plain]="INSERT INTO policies (tenant_id, name) VALUES (\$1, 'bench')"
    [subq]="INSERT INTO policies (tenant_id, name, workspace_id) VALUES (\$1, 'bench', (SELECT workspace_id FROM public.tenants WHERE id = \$1))"
    [helper]="$helper"
    [hybrid]="INSERT INTO policies (tenant_id, name, workspace_id) VALUES (\$1, 'bench', COALESCE((SELECT t.workspace_id FROM public.tenants t WHERE t.id OPERATOR(pg_catalog.=) tenantguard.as_type((NULL::public.policies).tenant_id, (NULL::public.policies).tenant_id, \$1)), tenantguard.ws_derive('policies', (NULL::public.policies).tenant_id, \$1, (NULL::public.policies).workspace_id)))"
)

# Statements for single-user mode (-j: each ends with ";" and a blank line).
script() {   # script SHAPE MODE COUNT
    local sql=${shape[$1]} i
    if [ "$2" = prepared ]; then
        printf 'PREPARE p(bigint) AS %s;\n\n' "$sql"
        for ((i = 0; i < $3; i++)); do printf 'EXECUTE p(%d);\n\n' $((3 + i % 2)); done
    else
        for ((i = 0; i < $3; i++)); do printf '%s;\n\n' "${sql//\$1/$((3 + i % 2))}"; done
    fi
}
cost() {     # cost SHAPE MODE COUNT -> instructions of the whole backend run
    script "$@" > "$dir/in.sql"
    chmod 644 "$dir/in.sql"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$pgbin/postgres" --single -D "$dir/data" -j app < "$dir/in.sql" > "$dir/run.log" 2>&1
    if grep -q ERROR "$dir/run.log"; then grep ERROR "$dir/run.log" | head -3 >&2; exit 1; fi
    awk '/^summary:/ {print $2}' "$dir/cg.out"
}

printf '%-9s %-8s %16s %12s\n' mode shape instr/statement vs-plain
for mode in simple prepared; do
    base=0
    for s in plain subq helper hybrid; do
        a=$(cost "$s" "$mode" "$n")
        b=$(cost "$s" "$mode" $((5 * n)))
        per=$(((b - a) / (4 * n)))
        [ "$s" = plain ] && base=$per
        printf '%-9s %-8s %16d %+12d\n' "$mode" "$s" "$per" $((per - base))
    done
done
