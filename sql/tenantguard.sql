-- tenantguard.sql -- tenantguard's own objects in the database, version 1.
--
-- Installed (and re-installed, idempotently) by `tenantguard migrate --phase 1`.
-- The proxy checks {{HELPER_SCHEMA}}.helpers_version() at start-up and refuses
-- enforce mode when it is missing or was rendered for another policy.
--
-- Placeholders, filled from the policy config by tg_helpers_sql_render():
--   {{HELPER_SCHEMA}}   quoted schema for these objects   ("tenantguard")
--   {{TENANT_TABLE}}    quoted, qualified tenants table    ("public"."tenants")
--   {{TENANT_ID}}       quoted key column of tenants       ("id")
--   {{TENANT_WS}}       quoted workspace column of tenants ("workspace_id")
--   {{VERSION}}         version and policy hash, e.g. 1:9f86d081884c7d65
--
-- Every name inside is schema-qualified and every operator is written as
-- OPERATOR(pg_catalog.=), so a client's search_path, temp tables or
-- look-alike operators cannot change what this code means. The functions run
-- as the client (SECURITY INVOKER) inside the client's own statement and
-- transaction, so a tenant created or moved earlier in the same open
-- transaction is seen exactly as the client's statement sees it.
--
-- How the rewriter (rewrite/) calls them. For a watched table "public"."policies"
-- with tenant column tenant_id and workspace column workspace_id:
--
--   tsample = (NULL::"public"."policies")."tenant_id"     -- typed NULL, folded at plan time
--   wsample = (NULL::"public"."policies")."workspace_id"
--
--   R1  INSERT row without workspace_id   -> workspace_id := ws_derive('policies', tsample, <tenant>, wsample)
--   R2  INSERT row with workspace_id <w>  -> ws_verify('policies', tsample, <tenant>, wsample,
--                                                      as_type(wsample, wsample, <w>), 'workspace_id')
--   R4  UPDATE ... SET tenant_id = <t>    -> tenant_keep('policies', 'tenant_id', p.tenant_id, <t>)
--   R5  UPDATE ... SET workspace_id = <w> -> ws_verify_update('policies', tsample, p.tenant_id, wsample,
--                                                      as_type(wsample, wsample, <w>), 'workspace_id')
--   R6  audit rows: audit_derive / audit_verify / audit_verify_tenant, same shapes; a NULL tenant
--       passes the row as sent.
--
-- Typing. A value the client wrote (<tenant>, <w>, <t>: a literal, a $n parameter, a column)
-- always meets one of our typed samples in the same polymorphic family, and "anycompatible"
-- is used wherever a client value enters, so PostgreSQL infers the type of an untyped $n from
-- the sample -- the column's own type -- exactly as it would from the INSERT or UPDATE target
-- without us; the ParameterDescription a client sees does not change, and an int2/int4
-- parameter (psycopg 3 sends small Python ints so) is accepted as the column would accept it.
-- The workspace value is brought to the column's exact type by as_type() (an inlinable SQL
-- function: it costs nothing at run time) because it meets the anyelement family of ws_verify.
--
-- Errors are raised with SQLSTATE 42501 (R1-R6) or 0A000 (layout), TABLE = the table label and
-- CONSTRAINT = tenantguard_r2 .. tenantguard_r6 / tenantguard_layout: the proxy counts by the
-- constraint field. Messages name the table, the rule and the ids, never other values.

CREATE SCHEMA IF NOT EXISTS {{HELPER_SCHEMA}};
-- Every role that writes through tenantguard calls these functions inside its own
-- statements: it needs USAGE on the schema (functions are EXECUTE to PUBLIC by
-- default). Nobody but the owner may CREATE here -- a look-alike function in this
-- schema would replace the checks.
GRANT USAGE ON SCHEMA {{HELPER_SCHEMA}} TO PUBLIC;
REVOKE CREATE ON SCHEMA {{HELPER_SCHEMA}} FROM PUBLIC;

CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.helpers_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $tg$ SELECT '{{VERSION}}'::pg_catalog.text $tg$;

-- R1: the workspace of tenant p_tenant, typed as the table's workspace column (the
-- type of p_wsample). R3 when the tenant is NULL, does not exist or has no workspace.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.ws_derive(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                       p_tenant anycompatible, p_wsample anyelement)
    RETURNS anyelement
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R3) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R3) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R3) on %s', p_tenant, p_tbl);
    END IF;
    RETURN v_ws;
END
$tg$;

-- R2: p_ws when it is the workspace of tenant p_tenant; NULL or anything else is rejected.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.ws_verify(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                       p_tenant anycompatible, p_wsample anyelement,
                                                       p_ws anyelement, p_wcol pg_catalog.text)
    RETURNS anyelement
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R3) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R3) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R3) on %s', p_tenant, p_tbl);
    END IF;
    IF p_ws IS NULL OR NOT (p_ws OPERATOR(pg_catalog.=) v_ws) THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r2',
            MESSAGE = pg_catalog.format('tenantguard: %s %s does not match tenant %s (workspace %s) on %s (R2)',
                                        p_wcol, COALESCE(p_ws::pg_catalog.text, 'NULL'), p_tenant, v_ws, p_tbl);
    END IF;
    RETURN p_ws;
END
$tg$;

-- R5: as R2, for UPDATE ... SET workspace_id = p_ws of a row whose tenant is p_tenant.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.ws_verify_update(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                              p_tenant anycompatible, p_wsample anyelement,
                                                              p_ws anyelement, p_wcol pg_catalog.text)
    RETURNS anyelement
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R3) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R3) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r3',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R3) on %s', p_tenant, p_tbl);
    END IF;
    IF p_ws IS NULL OR NOT (p_ws OPERATOR(pg_catalog.=) v_ws) THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r5',
            MESSAGE = pg_catalog.format('tenantguard: %s %s does not match tenant %s (workspace %s) on update of %s (R5)',
                                        p_wcol, COALESCE(p_ws::pg_catalog.text, 'NULL'), p_tenant, v_ws, p_tbl);
    END IF;
    RETURN p_ws;
END
$tg$;

-- R4: p_new when it is p_old (NULLs equal), else rejected: the tenant of a row never changes.
-- Written without IS DISTINCT FROM, which would look its operator up through search_path.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.tenant_keep(p_tbl pg_catalog.text, p_tcol pg_catalog.text,
                                                         p_old anycompatible, p_new anycompatible)
    RETURNS anycompatible
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_same pg_catalog.bool;
BEGIN
    v_same := CASE WHEN p_old IS NULL THEN p_new IS NULL
                   WHEN p_new IS NULL THEN false
                   ELSE p_new OPERATOR(pg_catalog.=) p_old END;
    IF v_same THEN
        RETURN p_new;
    END IF;
    RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r4',
        MESSAGE = pg_catalog.format('tenantguard: %s of %s cannot change from %s to %s (R4)', p_tcol, p_tbl,
                                    COALESCE(p_old::pg_catalog.text, 'NULL'),
                                    COALESCE(p_new::pg_catalog.text, 'NULL'));
END
$tg$;

-- R6, INSERT without the workspace column: NULL for a row without tenant, else derived.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.audit_derive(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                          p_tenant anycompatible, p_wsample anyelement)
    RETURNS anyelement
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RETURN NULL;
    END IF;
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R6) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R6) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R6) on %s', p_tenant, p_tbl);
    END IF;
    RETURN v_ws;
END
$tg$;

-- R6, a workspace given with the row (INSERT, or UPDATE of the workspace column): as sent
-- for a row without tenant, else it must be the tenant's workspace.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.audit_verify(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                          p_tenant anycompatible, p_wsample anyelement,
                                                          p_ws anyelement, p_wcol pg_catalog.text)
    RETURNS anyelement
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RETURN p_ws;
    END IF;
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R6) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R6) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R6) on %s', p_tenant, p_tbl);
    END IF;
    IF p_ws IS NULL OR NOT (p_ws OPERATOR(pg_catalog.=) v_ws) THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: %s %s does not match tenant %s (workspace %s) on %s (R6)',
                                        p_wcol, COALESCE(p_ws::pg_catalog.text, 'NULL'), p_tenant, v_ws, p_tbl);
    END IF;
    RETURN p_ws;
END
$tg$;

-- R6, UPDATE of the audit table's tenant column alone: the new tenant p_tenant must own the
-- row's current workspace p_ws (a NULL tenant is always fine). Returns p_tenant.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.audit_verify_tenant(p_tbl pg_catalog.text, p_tsample anycompatible,
                                                                 p_tenant anycompatible, p_wsample anyelement,
                                                                 p_ws anyelement, p_wcol pg_catalog.text)
    RETURNS anycompatible
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_found pg_catalog.bool;
    v_ws p_wsample%TYPE;
BEGIN
    IF p_tenant IS NULL THEN
        RETURN p_tenant;
    END IF;
    IF p_tenant IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant is NULL (R6) on %s', p_tbl);
    END IF;
    SELECT true, t.{{TENANT_WS}} INTO v_found, v_ws
      FROM {{TENANT_TABLE}} AS t
     WHERE t.{{TENANT_ID}} OPERATOR(pg_catalog.=) p_tenant;
    IF v_found IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s does not exist (R6) on %s', p_tenant, p_tbl);
    END IF;
    IF v_ws IS NULL THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: tenant %s has no workspace (R6) on %s', p_tenant, p_tbl);
    END IF;
    IF p_ws IS NULL OR NOT (p_ws OPERATOR(pg_catalog.=) v_ws) THEN
        RAISE USING ERRCODE = '42501', TABLE = p_tbl, CONSTRAINT = 'tenantguard_r6',
            MESSAGE = pg_catalog.format('tenantguard: %s %s does not match tenant %s (workspace %s) on %s (R6)',
                                        p_wcol, COALESCE(p_ws::pg_catalog.text, 'NULL'), p_tenant, v_ws, p_tbl);
    END IF;
    RETURN p_tenant;
END
$tg$;

-- p_v converted to the exact type of p_exact, as an assignment to that column would convert
-- it; p_sample (the same column) makes an untyped $n take the column's type. Inlined by the
-- planner: no run-time cost.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.as_type(p_exact anyelement, p_sample anycompatible, p_v anycompatible)
    RETURNS anyelement
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $tg$ SELECT p_v $tg$;

-- Positional INSERT (no column list) is expanded by the rewriter from catalog facts into an
-- explicit column list. This guard, evaluated with the row, proves at run time that the
-- table's first columns are still p_signature (attname list, comma-separated, in attnum
-- order, dropped columns left out) -- so the expansion can never be stale after ALTER TABLE.
-- Returns p_label for the caller's messages.
CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.layout_guard(p_tbl pg_catalog.regclass, p_signature pg_catalog.text,
                                                          p_label pg_catalog.text)
    RETURNS pg_catalog.text
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $tg$
#variable_conflict use_variable
DECLARE
    v_now pg_catalog.text;
    v_n pg_catalog.int4 := pg_catalog.array_length(pg_catalog.string_to_array(p_signature, ','), 1);
BEGIN
    SELECT pg_catalog.string_agg(a.attname::pg_catalog.text, ',' ORDER BY a.attnum) INTO v_now
      FROM (SELECT a.attname, a.attnum
              FROM pg_catalog.pg_attribute AS a
             WHERE a.attrelid OPERATOR(pg_catalog.=) p_tbl
               AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
             ORDER BY a.attnum LIMIT v_n) AS a;
    IF v_now IS NULL OR v_now OPERATOR(pg_catalog.<>) p_signature THEN
        RAISE USING ERRCODE = '0A000', TABLE = p_label, CONSTRAINT = 'tenantguard_layout',
            MESSAGE = pg_catalog.format('tenantguard: the columns of %s changed since the INSERT without a column list was rewritten; name the columns', p_label);
    END IF;
    RETURN p_label;
END
$tg$;
