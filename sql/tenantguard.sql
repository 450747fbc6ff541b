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
-- look-alike operators cannot change what this code means.

CREATE SCHEMA IF NOT EXISTS {{HELPER_SCHEMA}};

CREATE OR REPLACE FUNCTION {{HELPER_SCHEMA}}.helpers_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $tg$ SELECT '{{VERSION}}'::pg_catalog.text $tg$;
