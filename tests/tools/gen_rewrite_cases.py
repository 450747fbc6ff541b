#!/usr/bin/env python3
"""Generate tests/unit/test_rewrite_cases.c from the case list below.

Each case states by hand what must happen (action, SQLSTATE, a message
substring, substrings the rewritten text must hold); the generator runs
rwtool once, refuses to write anything when an outcome differs from what
is stated here, and records the exact rewritten text, events and effects as
goldens (after they were reviewed). The C test then checks every field and
re-parses every rewritten text.

    tests/tools/gen_rewrite_cases.py build/tests/tools/rwtool > tests/unit/test_rewrite_cases.c
"""
import json
import subprocess
import sys

CAT = "policies=id,tenant_id,name,policy_type,settings,created_at,updated_at,workspace_id"
AUDIT_CAT = "audit_logs=id,tenant_id,workspace_id,actor,action,status,resource_type,resource_id,context,created_at"

# (name, sql, expect) ; expect keys: action, sqlstate, msg, has (list), mode, env, proto, catalog, flags
CASES = []


def case(name, sql, action, **kw):
    CASES.append(dict(name=name, sql=sql, action=action, **kw))


P = "pass"
R = "replace"
J = "reject"

# ---------------------------------------------------------------- pre-filter
case("pf plain select", "SELECT 1", P, flags=["prefiltered"])
case("pf other table select", "SELECT * FROM users WHERE id = $1", P, flags=["prefiltered"])
case("pf other table insert", "INSERT INTO users (name) VALUES ('x')", P, flags=["prefiltered"])
case("pf other table update", "UPDATE accounts SET balance = 0 WHERE id = 7", P, flags=["prefiltered"])
case("pf tenants insert", "INSERT INTO tenants (id, workspace_id, name) VALUES (1, 2, 'x')", P, flags=["prefiltered"])
case("pf tenants move workspace", "UPDATE tenants SET workspace_id = 5 WHERE id = 1", P, flags=["prefiltered"])
case("pf syntax error elsewhere", "SELEC 1 FROM users", P, flags=["prefiltered"])
case("pf long unrelated", "SELECT a, b, c, d, e FROM some_long_table_name t JOIN other_table o ON o.id = t.oid "
     "WHERE t.created_at > now() - interval '1 day' ORDER BY 1 LIMIT 100", P, flags=["prefiltered"])
case("pf name read only", "SELECT * FROM policies WHERE tenant_id = $1", P, notflags=["prefiltered"])
case("pf name upper case", "select * from POLICIES", P, notflags=["prefiltered"])
case("pf name in string", "SELECT 'policies'", P, notflags=["prefiltered"])
case("pf name in comment", "SELECT 1 /* policies */", P, notflags=["prefiltered"])
case("pf name in line comment", "SELECT 1 -- inventory_links\n", P, notflags=["prefiltered"])
case("pf name in dollar quote", "SELECT $q$ backup_items $q$", P, notflags=["prefiltered"])
case("pf u& string", "SELECT u&'\\0061'", P, notflags=["prefiltered"])
case("pf leading set", "SET application_name = 'x'", P, notflags=["prefiltered"])
case("pf leading set after comment", "/* tag */ SET statement_timeout = 5", P, notflags=["prefiltered"])
case("pf leading reset after line comment", "-- c\nRESET ALL", P, effects="lexing reset_path")
case("pf second statement set", "SELECT 1; set search_path = a", P, effects="set_path[1]=a")
case("pf execute inside explain", "EXPLAIN ANALYZE EXECUTE p1", P, effects="execute=p1")
case("pf set_config anywhere", "SELECT 1, set_config('search_path', 'x', false)", P, effects="set_path=x")
case("pf word settings not set", "SELECT settings FROM users", P, flags=["prefiltered"])

# --------------------------------------------------------------- R1 VALUES
case("R1 one row params", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", R, events="seen//policies rewritten/R1/policies")
case("R1 one row extended", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", R, proto=1)
case("R1 multi row", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2), (3, 'x')", R)
case("R1 multi row literals", "INSERT INTO policies (tenant_id, name, policy_type) VALUES (1, 'a', 'b'), (2, 'c', 'd'), (3, 'e', 'f')", R)
case("R1 typed param keyword type", "INSERT INTO policies (tenant_id, name) VALUES ($1::bigint, 'a')", R)
case("R1 typed literal pg_catalog", "INSERT INTO policies (tenant_id, name) VALUES ('5'::pg_catalog.int8, 'a')", R)
case("R1 typed literal unqualified path unknown", "INSERT INTO policies (tenant_id, name) VALUES ('5'::int8, 'a')", J,
     sqlstate="0A000", msg="cannot be evaluated twice")
case("R1 typed literal unqualified path known", "INSERT INTO policies (tenant_id, name) VALUES ('5'::int8, 'a')", R,
     env="path=public")
case("R1 typed literal path lists pg_catalog", "INSERT INTO policies (tenant_id, name) VALUES ('5'::int8, 'a')", J,
     env="path=evil,pg_catalog,public", sqlstate="0A000")
case("R1 CAST syntax", "INSERT INTO policies (tenant_id, name) VALUES (CAST($1 AS bigint), $2)", R)
case("R1 negative literal", "INSERT INTO policies (tenant_id, name) VALUES (-5, 'a')", R)
case("R1 NULL tenant", "INSERT INTO policies (tenant_id, name) VALUES (NULL, 'a')", R)
case("R1 qualified operator", "INSERT INTO policies (tenant_id, name) VALUES ($1 OPERATOR(pg_catalog.+) 0, 'a')", R)
case("R1 plain operator refused", "INSERT INTO policies (tenant_id, name) VALUES ($1 + 0, 'a')", J, sqlstate="0A000",
     msg="cannot be evaluated twice")
case("R1 subquery tenant refused", "INSERT INTO policies (tenant_id, name) VALUES ((SELECT id FROM tenants LIMIT 1), 'a')", J,
     sqlstate="0A000", msg="INSERT ... VALUES into policies")
case("R1 function tenant refused", "INSERT INTO policies (tenant_id, name) VALUES (current_tenant(), 'a')", J, sqlstate="0A000")
case("R1 cast of column refused in values", "INSERT INTO policies (tenant_id, name) VALUES (x::bigint, 'a')", J, sqlstate="0A000")
case("R1 workspace DEFAULT derived", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, DEFAULT, $2)", R,
     has=["VALUES ($1, tenantguard.ws_derive("])
case("R1 quoted column names", 'INSERT INTO policies ("tenant_id", "name") VALUES (1, \'a\')', R)
case("R1 upper case columns fold", "INSERT INTO policies (TENANT_ID, NAME) VALUES (1, 'a')", R)
case("R1 comments kept", "INSERT INTO policies /* c1 */ (tenant_id, name) -- c2\n VALUES ($1, $2) /* c3 */", R,
     has=["/* c1 */", "-- c2\n", "/* c3 */"])
case("R1 comment before row close", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2 /* last */)", R)
case("R1 line comment before row close", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2 -- last\n)", R)
case("R1 no whitespace", "insert into policies(tenant_id,name)values(1,'a'),(2,'b')returning*", R)
case("R1 returning untouched", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING id, workspace_id", R,
     has=[") RETURNING id, workspace_id"])
case("R1 overriding", "INSERT INTO policies (tenant_id, name) OVERRIDING SYSTEM VALUE VALUES (1, 'a')", R)
case("R1 with clause on insert", "WITH x AS (SELECT 1) INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R)
case("R1 values order limit", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a') ORDER BY 1 LIMIT 1", R)
case("R1 U& name", 'INSERT INTO U&"\\0070olicies" (tenant_id, name) VALUES (1, \'a\')', R, has=['U&"\\0070olicies"'])
case("R1 U& name UESCAPE", 'INSERT INTO U&"!0070olicies" UESCAPE \'!\' (tenant_id, name) VALUES (1, \'a\')', R)
case("R1 quoted name", 'INSERT INTO "policies" (tenant_id, name) VALUES (1, \'a\')', R)
case("R1 schema upper case", "INSERT INTO PUBLIC.POLICIES (tenant_id, name) VALUES (1, 'a')", R)
case("R1 other watched table", "INSERT INTO backup_items (tenant_id, backup_set_id) VALUES ($1, $2)", R,
     has=["(NULL::\"public\".\"backup_items\").\"tenant_id\""])
case("R1 every watched table", "INSERT INTO entra_role_definitions (tenant_id, external_id, display_name) VALUES (1, 'e', 'd')", R)
case("R1 tenant_permissions", "INSERT INTO tenant_permissions (tenant_id, permission) VALUES (1, 'p')", R)
case("R1 std strings off", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a\\'b')", R, env="std=off",
     has=["'a\\'b'"])
case("R1 std strings on same text", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a\\'b')", J, sqlstate="0A000",
     msg="could not be parsed", flags=["parse_failed"])
case("R1 escape string", "INSERT INTO policies (tenant_id, name) VALUES (1, E'a\\'b')", R)
case("R1 dollar quoted value", "INSERT INTO policies (tenant_id, name) VALUES (1, $n$it's, (odd)$n$)", R)
case("R1 wrap union all values", "INSERT INTO policies (tenant_id, name) SELECT 1, 'a' FROM s WHERE false UNION ALL VALUES (3, 'x')", R)
case("R1 row star element refused", "INSERT INTO policies (tenant_id, name, settings) VALUES (3, s.*) ", J, sqlstate="0A000", msg="expands a row")
case("R1 table source wrapped", "INSERT INTO policies (tenant_id, name) TABLE staging", R, has=["FROM (TABLE staging) AS tg_s"])
case("R1 array and row values", "INSERT INTO policies (tenant_id, name, settings) VALUES (1, ARRAY['a','b']::text, ROW(1,2)::text::jsonb)", R)

# ------------------------------------------------------------ R1 SELECT
case("R1 select column", "INSERT INTO policies (tenant_id, name) SELECT id, name FROM tenants", R)
case("R1 select aliases", "INSERT INTO policies (tenant_id, name) SELECT t.id AS tenant_id, 'x' AS name FROM tenants t WHERE t.id > 3 ORDER BY 1", R)
case("R1 select bare aliases", "INSERT INTO policies (tenant_id, name) SELECT t.id tid, t.name nm FROM tenants t", R)
case("R1 select params", "INSERT INTO policies (tenant_id, name) SELECT $1, $2", R)
case("R1 select parenthesized", "INSERT INTO policies (tenant_id, name) (SELECT 1, 'a')", R)
case("R1 select distinct on", "INSERT INTO policies (tenant_id, name) SELECT DISTINCT ON (x) x, y FROM t ORDER BY x, y LIMIT 5 FOR UPDATE", R)
case("R1 select group having window", "INSERT INTO policies (tenant_id, name) SELECT x, y FROM t GROUP BY x, y HAVING count(*) > 1 WINDOW w AS (PARTITION BY x)", R)
case("R1 select with cte", "INSERT INTO policies (tenant_id, name) WITH s AS (SELECT 1 AS t, 'n' AS n) SELECT t, n FROM s", R)
case("R1 select on conflict", "INSERT INTO policies (tenant_id, name) SELECT id, name FROM tenants ON CONFLICT DO NOTHING", R,
     has=["FROM tenants ON CONFLICT DO NOTHING"])
case("R1 select no from on conflict", "INSERT INTO policies (tenant_id, name) SELECT 1, 'a' ON CONFLICT DO NOTHING", R)
case("R1 wrap union", "INSERT INTO policies (tenant_id, name) SELECT (SELECT max(id) FROM tenants), 'x'::text UNION ALL SELECT 4, 'y'", R,
     has=["FROM (SELECT (SELECT max(id) FROM tenants)", ") AS tg_s(tenant_id, name)"])
case("R1 wrap star", "INSERT INTO policies (tenant_id, name) SELECT * FROM staging ON CONFLICT DO NOTHING RETURNING id", R,
     has=["SELECT tg_s.*, tenantguard.ws_derive", ") AS tg_s(tenant_id, name) ON CONFLICT"])
case("R1 wrap generate_series", "INSERT INTO policies (tenant_id, name) SELECT generate_series(1,3), 'x'::text", R)
case("R1 wrap function typed", "INSERT INTO policies (tenant_id, name) SELECT f(x), n::text FROM t", R)
case("R1 wrap intersect", "INSERT INTO policies (tenant_id, name) SELECT a, b FROM s1 INTERSECT SELECT a, b FROM s2", R)
case("R1 wrap values in union", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a') UNION SELECT 2, 'b'", R)
case("R1 wrap refused untyped literal", "INSERT INTO policies (tenant_id, name) SELECT f(x), 'n' FROM t", J, sqlstate="0A000",
     msg="untyped literal")
case("R1 wrap refused untyped param", "INSERT INTO policies (tenant_id, name) SELECT (SELECT 1), $2", J, sqlstate="0A000")
case("R1 wrap refused null", "INSERT INTO policies (tenant_id, name) SELECT f(x), NULL FROM t", J, sqlstate="0A000")
case("R1 select too many columns", "INSERT INTO policies (tenant_id, name) SELECT 1, 'a', 'b'", J, sqlstate="0A000", msg="selects 3 columns for 2")

# ------------------------------------------------------------------ R2
case("R2 params", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)", R,
     events="seen//policies rewritten/R2/policies")
case("R2 literal", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'x')", R)
case("R2 NULL workspace", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, NULL, 'x')", R,
     has=["tenantguard.as_type((NULL::\"public\".\"policies\").\"workspace_id\", (NULL::\"public\".\"policies\").\"workspace_id\", NULL)"])
case("R2 mixed rows", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (1, DEFAULT, 'a'), (2, 7, 'b')", R,
     events="seen//policies rewritten/R1/policies rewritten/R2/policies")
case("R2 workspace first", "INSERT INTO policies (workspace_id, tenant_id, name) VALUES ($1, $2, $3)", R)
case("R2 subquery workspace", "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, (SELECT workspace_id FROM tenants WHERE id = $1), 'x')", R)
case("R2 select simple", "INSERT INTO policies (tenant_id, workspace_id, name) SELECT t.id tid, t.workspace_id ws, 'n' nm FROM tenants t", R)
case("R2 select wrap union", "INSERT INTO policies (tenant_id, workspace_id, name) SELECT tid, wid, n FROM staging UNION SELECT 1, 2, 'x'", R,
     has=["SELECT tg_s.tenant_id, tenantguard.ws_verify(", "tg_s.workspace_id), 'workspace_id'), tg_s.name FROM ("])
case("R2 workspace subscript refused", "INSERT INTO policies (tenant_id, workspace_id[1]) VALUES (1, 2)", J, sqlstate="0A000",
     msg="assigns a part of workspace_id")
case("R2 tenant missing", "INSERT INTO policies (workspace_id, name) VALUES (1, 'x')", J, sqlstate="42501", msg="(R3)")

# ------------------------------------------------------------------ R3
case("R3 column omitted", "INSERT INTO policies (name) VALUES ('x')", J, sqlstate="42501",
     msg="tenantguard: INSERT into policies does not set tenant_id", events="seen//policies rejected/R3/policies")
case("R3 default values", "INSERT INTO policies DEFAULT VALUES", J, sqlstate="42501", msg="DEFAULT VALUES into policies")
case("R3 tenant DEFAULT", "INSERT INTO policies (tenant_id, name) VALUES (DEFAULT, 'a')", J, sqlstate="42501",
     msg="sets tenant_id to DEFAULT")
case("R3 quoted look-alike column", 'INSERT INTO policies ("TENANT_ID", name) VALUES (1, \'a\')', J, sqlstate="42501")
case("R3 select without tenant", "INSERT INTO policies (name) SELECT name FROM x", J, sqlstate="42501")

# -------------------------------------------------------- ON CONFLICT
case("OC do nothing", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", R)
case("OC update other column", "INSERT INTO policies (tenant_id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name", R,
     events="seen//policies rewritten/R1/policies")
case("OC workspace excluded", "INSERT INTO policies AS p (tenant_id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, tenant_id = EXCLUDED.tenant_id WHERE p.name <> 'x' RETURNING *", R,
     events="seen//policies rewritten/R1/policies rewritten/R5/policies rewritten/R4/policies")
case("OC tenant excluded no alias", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id", R,
     has=["tenantguard.tenant_keep('policies', 'tenant_id', policies.tenant_id, EXCLUDED.tenant_id)"])
case("OC row set", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET (name, workspace_id) = (EXCLUDED.name, EXCLUDED.workspace_id)", R)
case("OC set default workspace", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET workspace_id = DEFAULT", J,
     sqlstate="42501", msg="(R5)")

# ------------------------------------------------------------------ R4
case("R4 param", "UPDATE policies SET tenant_id = $1 WHERE id = $2", R, events="seen//policies rewritten/R4/policies")
case("R4 alias", "UPDATE policies AS p SET tenant_id = $1 WHERE p.id = $2", R, has=["p.tenant_id, $1)"])
case("R4 same value orm", "UPDATE policies SET tenant_id = tenant_id, name = $1 WHERE id = $2", R)
case("R4 default", "UPDATE policies SET tenant_id = DEFAULT", J, sqlstate="42501", msg="tenant_id of policies cannot be set to DEFAULT (R4)")
case("R4 subscript", "UPDATE policies SET tenant_id[1] = 5", J, sqlstate="0A000", msg="assigns a part of tenant_id")
case("R4 current of", "UPDATE policies SET tenant_id = $1 WHERE CURRENT OF c", R, has=["WHERE CURRENT OF c"])
case("R4 only qualified", "UPDATE ONLY public.policies SET tenant_id = 4", R, has=["policies.tenant_id, 4)"])
case("R4 row implicit", "UPDATE policies p SET (tenant_id, name) = ($1, $2) WHERE id = 1", R)
case("R4 row explicit", "UPDATE ONLY public.policies SET (tenant_id, name) = ROW(tenant_id, 'x')", R)
case("R4 row subselect", "UPDATE policies SET (tenant_id, name) = (SELECT s.a, s.b FROM staging s WHERE s.id = policies.id)", R)
case("R4 row subselect star refused", "UPDATE policies SET (tenant_id, name) = (SELECT * FROM staging s)", J, sqlstate="0A000")
case("R4 row subselect shadow refused", "UPDATE policies SET (tenant_id, name) = (SELECT a, b FROM policies WHERE id = 2)", J, sqlstate="0A000")
case("R4 row star element refused", "UPDATE policies SET (tenant_id, name) = ROW(s.*) FROM s", J, sqlstate="0A000")
case("R4 row untouched columns", "UPDATE policies SET (name, settings) = (SELECT a, b FROM staging)", P,
     events="seen//policies passed//policies")
case("R4 cte update", "WITH u AS (UPDATE policies SET tenant_id = 2 WHERE id = 1 RETURNING id) SELECT * FROM u", R)
case("R4 returning", "UPDATE policies SET tenant_id = $1 RETURNING tenant_id, workspace_id", R, has=[") RETURNING tenant_id, workspace_id"])

# ------------------------------------------------------------------ R5
case("R5 param", "UPDATE policies SET workspace_id = $1 WHERE id = $2", R, events="seen//policies rewritten/R5/policies")
case("R5 backfill statement", "UPDATE policies p SET workspace_id = t.workspace_id FROM tenants t WHERE t.id = p.tenant_id AND p.workspace_id IS NULL", R)
case("R5 from aliased tenants", "UPDATE policies SET workspace_id = tenants.workspace_id FROM tenants WHERE tenants.id = policies.tenant_id", R)
case("R5 from item named tenants other schema", "UPDATE policies p SET workspace_id = tenants.w FROM attacker.x AS tenants WHERE tenants.id = p.tenant_id", R,
     has=["p.tenant_id, (NULL::"])
case("R5 default", "UPDATE policies SET workspace_id = DEFAULT", J, sqlstate="42501", msg="(R5)")
case("R5 null", "UPDATE policies SET workspace_id = NULL", R)
case("R5 case is distinct from", "UPDATE policies SET workspace_id = CASE WHEN a IS DISTINCT FROM b THEN 1 ELSE 2 END FROM t WHERE t.x = 1", R,
     has=["CASE WHEN a IS DISTINCT FROM b THEN 1 ELSE 2 END), 'workspace_id') FROM t WHERE"])
case("R5 cast then where", "UPDATE policies SET workspace_id = x::bigint WHERE id = 1", R)
case("R5 subquery value", "UPDATE policies SET workspace_id = (SELECT workspace_id FROM tenants WHERE id = policies.tenant_id) RETURNING *", R)
case("R5 and R4 together", "UPDATE policies p SET (tenant_id, name) = ($1, $2), workspace_id = $3 WHERE CURRENT OF c", R,
     events="seen//policies rewritten/R4/policies rewritten/R5/policies")
case("R5 row element", "UPDATE policies SET (name, workspace_id) = ROW('n', $2) WHERE id = 1", R)
case("R5 row subselect", "UPDATE policies SET (name, workspace_id) = (SELECT 'n', w FROM tenants t WHERE t.id = 1)", R)
case("R5 is not null end", "UPDATE policies SET workspace_id = 5 WHERE workspace_id IS NOT NULL", R)
case("R5 paren expression", "UPDATE policies SET workspace_id = (a) + b FROM x", R, has=["(a) + b), 'workspace_id') FROM x"])
case("R5 comment after value", "UPDATE policies SET workspace_id = 5 -- why\n WHERE id = 1", R, has=["5), 'workspace_id') -- why\n WHERE"])
case("R5 trailing line comment", "UPDATE policies SET workspace_id = 5 -- set it", R, has=["5), 'workspace_id') -- set it"])
case("R5 other column only", "UPDATE policies SET name = 'x' WHERE id = 1", P, events="seen//policies passed//policies")

# ------------------------------------------------------------------ R6
case("R6 no tenant column", "INSERT INTO audit_logs (action) VALUES ('x')", P, events="seen//audit_logs passed//audit_logs")
case("R6 default values", "INSERT INTO audit_logs DEFAULT VALUES", P)
case("R6 derive", "INSERT INTO audit_logs (tenant_id, action) VALUES (NULL, 'x'), ($1, 'y')", R,
     events="seen//audit_logs rewritten/R6/audit_logs")
case("R6 verify", "INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES ($1, $2, 'x'), (NULL, 3, 'y'), (DEFAULT, 4, 'z')", R)
case("R6 tenant default row", "INSERT INTO audit_logs (tenant_id, action) VALUES (DEFAULT, 'x'), (1, 'y')", R, has=["(DEFAULT, 'x', DEFAULT)"])
case("R6 workspace only", "INSERT INTO audit_logs (workspace_id, action) VALUES (5, 'x')", P)
case("R6 update workspace", "UPDATE audit_logs SET workspace_id = 5 WHERE id = 1", R)
case("R6 update tenant", "UPDATE audit_logs a SET tenant_id = $1 WHERE id = 1", R, has=["a.workspace_id, 'workspace_id')"])
case("R6 update both", "UPDATE audit_logs SET tenant_id = 1, workspace_id = 2", R)
case("R6 update both unsafe", "UPDATE audit_logs SET tenant_id = f(), workspace_id = 2", J, sqlstate="0A000")
case("R6 update default", "UPDATE audit_logs SET workspace_id = DEFAULT", J, sqlstate="0A000")
case("R6 merge", "MERGE INTO audit_logs a USING s ON a.id = s.id WHEN MATCHED THEN UPDATE SET tenant_id = s.t WHEN NOT MATCHED THEN INSERT (tenant_id, action) VALUES (s.t, 'x')", R)
case("R6 select", "INSERT INTO audit_logs (tenant_id, action) SELECT tenant_id, 'copied' FROM policies", R)
case("R6 delete", "DELETE FROM audit_logs WHERE id = 1", P, events="seen//audit_logs passed//audit_logs")

# ---------------------------------------------------------------- MERGE
case("MERGE update and insert", "MERGE INTO policies p USING staging s ON p.id = s.id WHEN MATCHED THEN UPDATE SET workspace_id = s.ws WHEN NOT MATCHED THEN INSERT (tenant_id, name) VALUES (s.tid, s.name)", R,
     events="seen//policies rewritten/R5/policies rewritten/R1/policies")
case("MERGE case when", "MERGE INTO policies p USING staging s ON p.id = s.id WHEN MATCHED AND CASE WHEN s.x THEN true END THEN UPDATE SET workspace_id = CASE WHEN s.a THEN s.b ELSE s.c END WHEN NOT MATCHED THEN INSERT (tenant_id, name) VALUES (s.tid, s.name)", R)
case("MERGE tenant change", "MERGE INTO policies p USING s ON p.id = s.id WHEN MATCHED THEN UPDATE SET tenant_id = s.t, (name, workspace_id) = (s.n, s.w) WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN DO NOTHING", R)
case("MERGE insert default values", "MERGE INTO policies p USING staging s ON p.id = s.id WHEN NOT MATCHED THEN INSERT DEFAULT VALUES", J, sqlstate="42501")
case("MERGE insert workspace given", "MERGE INTO policies p USING s ON p.id = s.id WHEN NOT MATCHED THEN INSERT (tenant_id, workspace_id, name) VALUES (s.t, s.w, s.n)", R)
case("MERGE insert without tenant", "MERGE INTO policies p USING s ON p.id = s.id WHEN NOT MATCHED THEN INSERT (name) VALUES (s.n)", J, sqlstate="42501")
case("MERGE positional no catalog", "MERGE INTO policies p USING s ON p.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.tid, s.name)", J,
     sqlstate="0A000", msg="name the columns")
case("MERGE positional catalog", "MERGE INTO policies p USING staging s ON p.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.tid, s.name)", R, catalog=CAT,
     has=["INSERT (id, tenant_id, name, workspace_id) VALUES"])
case("MERGE delete only", "MERGE INTO policies p USING s ON p.id = s.id WHEN MATCHED THEN DELETE", P)
case("MERGE subquery source", "MERGE INTO policies p USING (SELECT * FROM staging) s ON p.id = s.id WHEN NOT MATCHED THEN INSERT (tenant_id, name) VALUES (s.t, s.n)", R)

# ------------------------------------------------------------ positional
case("POS no catalog", "INSERT INTO policies VALUES (1, 3, 'n')", J, sqlstate="0A000", msg="name the columns")
case("POS catalog derive", "INSERT INTO policies VALUES (DEFAULT, 3, 'n')", R, catalog=CAT,
     has=["tenantguard.layout_guard('\"public\".\"policies\"'::pg_catalog.regclass, 'id,tenant_id,name', 'policies')"])
case("POS catalog verify", "INSERT INTO policies AS p VALUES (DEFAULT, 3, 'n', DEFAULT, DEFAULT, DEFAULT, DEFAULT, 5)", R, catalog=CAT)
case("POS catalog select", "INSERT INTO policies(SELECT 1, 3, 'n')", R, catalog=CAT)
case("POS catalog star refused", "INSERT INTO policies SELECT * FROM staging", J, catalog=CAT, sqlstate="0A000")
case("POS catalog too wide", "INSERT INTO policies VALUES (1, 2, 'n', 'p', '{}', now(), now(), 4, 5)", J, catalog=CAT,
     sqlstate="0A000", msg="9 values for 8 columns")
case("POS tenant not reached", "INSERT INTO policies VALUES (DEFAULT)", J, catalog=CAT, sqlstate="42501")
case("POS audit", "INSERT INTO audit_logs VALUES (DEFAULT, 3, NULL, 'me', 'act')", R, catalog=AUDIT_CAT)

# ---------------------------------------------------- names and environment
case("NAME path public", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=public")
case("NAME path other", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=other",
     has=["ws_derive"])
case("NAME path other then public", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=other,public")
case("NAME path empty", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=", has=["ws_derive"])
case("NAME path quoted", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env='path="$user",public')
case("NAME temp path unknown", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="temp=policies")
case("NAME temp shadow pinned", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=public|temp=policies",
     events="", has=["INSERT INTO pg_temp.policies (tenant_id, name) VALUES (1, 'a')"])
case("NAME temp after public", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R, env="path=public,pg_temp|temp=policies",
     has=["ws_derive"])
case("NAME temp first listed", 'UPDATE "policies" SET tenant_id = 5', R, env="path=pg_temp,public|temp=policies",
     has=['UPDATE pg_temp."policies" SET tenant_id = 5'])
case("NAME temp qualified public", "INSERT INTO public.policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=public|temp=policies", has=["ws_derive"])
case("NAME look-alike on the path pinned", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=other|rel=other.policies", events="", has=['INSERT INTO "other".policies (tenant_id, name)'])
case("NAME look-alike quoted name pinned", 'UPDATE "policies" SET tenant_id = 5', R,
     env="path=other,public|rel=other.policies", events="", has=['UPDATE "other"."policies" SET tenant_id = 5'])
case("NAME look-alike after the watched one", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=public,other|rel=other.policies", has=["ws_derive"])
case("NAME look-alike of another name", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=other|rel=other.findings", has=["ws_derive"])
case("NAME nothing on the path is the watched table", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=other|rels", has=["ws_derive"])
case("NAME nothing on the path, look-alikes unknown", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=other|temp=findings", has=["ws_derive"])
case("NAME look-alike renamed: pinned", "ALTER TABLE policies RENAME TO escaped", R,
     env="path=other|rel=other.policies", events="", flags=["pinned"], has=['ALTER TABLE "other".policies RENAME'])
case("NAME look-alike column type: pinned", "ALTER TABLE policies ALTER COLUMN workspace_id TYPE bigint USING 1", R,
     env="path=other|rel=other.policies", events="", flags=["pinned"])
case("NAME look-alike to another schema: pinned", "ALTER TABLE policies SET SCHEMA x", R,
     env="path=other|rel=other.policies", events="", flags=["pinned"])
case("NAME rename found nowhere is the watched table's", "ALTER TABLE policies RENAME TO escaped", J,
     env="path=other|rels", sqlstate="0A000")
case("NAME temp shadow renamed: pinned", "ALTER TABLE policies RENAME TO t2", R,
     env="path=public|temp=policies", events="", flags=["pinned"], has=["ALTER TABLE pg_temp.policies RENAME"])
case("NAME look-alike in observe mode is not pinned", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", P,
     env="path=other|rel=other.policies", mode="observe", events="")
case("NAME temp before a look-alike", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R,
     env="path=other|temp=policies|rel=other.policies", has=["INSERT INTO pg_temp.policies"])
case("EXPLAIN analyze named twice", "EXPLAIN (ANALYZE false, ANALYZE true) INSERT INTO policies (tenant_id, name) "
     "VALUES (1, 'a')", R, env="path=public", has=["ws_derive"])
case("DDL alter index renames the table", "ALTER INDEX policies RENAME TO pol2", J, env="path=public", sqlstate="0A000")
case("DDL alter index qualified", "ALTER INDEX public.policies RENAME TO pol2", J, sqlstate="0A000")
case("DDL alter view set schema", "ALTER VIEW public.policies SET SCHEMA x", J, sqlstate="0A000")
case("FX temp view shadows", "CREATE TEMP VIEW policies AS SELECT 1 AS x", P, effects="create_temp=policies",
     events="passed/beyond_sight/policies")
case("NAME explicit pg_temp", "INSERT INTO pg_temp.policies (tenant_id, name) VALUES (1, 'a')", P, events="")
case("NAME look-alike quoted", 'INSERT INTO "Policies" (tenant_id, name) VALUES (1, \'a\')', P, events="")
case("NAME other schema", "INSERT INTO other.policies (tenant_id, name) VALUES (1, 'a')", P, events="")
case("NAME attacker schema", "UPDATE attacker.policies SET tenant_id = 9", P, events="")
case("NAME catalog qualified", "INSERT INTO app.public.policies (tenant_id, name) VALUES (1, 'a')", R)
case("NAME tenants untouched", "INSERT INTO tenants (id, workspace_id, name) VALUES (1, 2, 'x'); SELECT * FROM policies", P)

# ----------------------------------------------------------------- modes
case("MODE observe derive", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", P, mode="observe",
     flags=["observed", "watched_write"], events="seen//policies rewritten/R1/policies")
case("MODE observe reject", "INSERT INTO policies (name) VALUES ('a')", P, mode="observe", flags=["observed"],
     events="seen//policies rejected/R3/policies")
case("MODE observe refuse", "COPY policies (tenant_id, name) FROM STDIN WITH (FORMAT csv)", P, mode="observe",
     events="seen//policies refused/form/policies")
case("MODE observe update", "UPDATE policies SET tenant_id = 5", P, mode="observe", events="seen//policies rewritten/R4/policies")
case("MODE off", "INSERT INTO policies (name) VALUES ('a')", P, mode="off", events="", flags=["watched_write"])
case("MODE off beyond sight", "DO $$ BEGIN DELETE FROM policies; END $$", P, mode="off", events="",
     effects="path_unknown lexing")
case("MODE mixed statements", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a'); INSERT INTO audit_logs (tenant_id, action) VALUES (1, 'x')",
     R, mode="enforce,policies=observe", flags=["observed"],
     has=["VALUES (1, 'a'); INSERT INTO audit_logs (tenant_id, action, workspace_id)"])
case("MODE mixed cte", "WITH a AS (INSERT INTO audit_logs (tenant_id, action) VALUES (1, 'x') RETURNING id) INSERT INTO policies (name) SELECT 'n' FROM a",
     R, mode="enforce,policies=observe", flags=["observed"])
case("MODE mixed reject in enforce table", "INSERT INTO policies (name) VALUES ('a'); INSERT INTO backup_sets (name) VALUES ('b')",
     J, mode="enforce,policies=observe", sqlstate="42501", msg="backup_sets")

# -------------------------------------------------------- multi-statement
case("MULTI two rewrites", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a'); UPDATE policies SET workspace_id = 3 WHERE id = 1", R)
case("MULTI reject second", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a'); INSERT INTO policies (name) VALUES ('b'); SELECT 1", J,
     sqlstate="42501", has=["tenantguard.ws_derive(", "; SELECT \"tenantguard:refused\""])
case("MULTI reject first", "INSERT INTO policies DEFAULT VALUES; SELECT 1; INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", J,
     sqlstate="42501", out='SELECT "tenantguard:refused"')
case("MULTI effects before reject kept", "SET search_path = a, public; INSERT INTO policies (name) VALUES ('x'); SET search_path = b", J,
     sqlstate="42501", effects="set_path=a, public")
case("MULTI statement index", "SELECT 1; SELECT 2; SAVEPOINT s1", P, effects="savepoint[2]=s1")
case("MULTI transaction block", "BEGIN; INSERT INTO policies (tenant_id, name) VALUES ($1, 'x'); COMMIT", R, has=["BEGIN; INSERT", "; COMMIT"])

# ------------------------------------------------------------- CTEs etc
case("CTE insert", "WITH x AS (INSERT INTO policies (tenant_id, name) VALUES (1, 'a') RETURNING *) SELECT * FROM x", R)
case("CTE three writes", "WITH a AS (INSERT INTO policies (tenant_id, name) VALUES (1, 'x') RETURNING id), b AS (UPDATE policies SET tenant_id = 2 WHERE id IN (SELECT id FROM a) RETURNING id) INSERT INTO audit_logs (tenant_id, action) SELECT 1, 'y' FROM b", R,
     events="seen//audit_logs rewritten/R6/audit_logs seen//policies rewritten/R1/policies seen//policies rewritten/R4/policies")
case("CTE nested", "WITH a AS (WITH b AS (INSERT INTO policies (tenant_id, name) VALUES (1, 'x') RETURNING id) SELECT * FROM b) SELECT * FROM a", R)
case("CTE delete", "WITH d AS (DELETE FROM policies WHERE id = 1 RETURNING *) SELECT count(*) FROM d", P,
     events="seen//policies passed//policies")
case("CTE in update from", "UPDATE policies p SET name = s.n FROM (SELECT 1 AS id, 'n' AS n) s WHERE p.id = s.id", P)

# --------------------------------------------------- EXPLAIN / PREPARE / COPY
case("EXPLAIN ANALYZE insert", "EXPLAIN ANALYZE INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", R)
case("EXPLAIN ANALYZE options", "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) UPDATE policies SET tenant_id = 5", R)
case("EXPLAIN ANALYZE true", "EXPLAIN (ANALYZE true) DELETE FROM policies", P, events="seen//policies passed//policies")
case("EXPLAIN ANALYZE off", "EXPLAIN (ANALYZE off) INSERT INTO policies (name) VALUES ('a')", P, events="")
case("EXPLAIN plain", "EXPLAIN INSERT INTO policies (name) VALUES ('a')", P, events="")
case("EXPLAIN ANALYZE execute", "EXPLAIN ANALYZE EXECUTE p(2)", P, effects="execute=p")
case("PREPARE insert", "PREPARE p(bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", R,
     effects="prepare=p+w")
case("PREPARE select", "PREPARE q AS SELECT * FROM policies", P, effects="prepare=q")
case("PREPARE refused", "PREPARE q AS INSERT INTO policies (name) VALUES ($1)", J, sqlstate="42501", effects="")
case("PREPARE observe", "PREPARE q AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", P, mode="observe",
     effects="prepare=q+w")
case("EXECUTE deallocate", "EXECUTE p(1, 'a'); DEALLOCATE p; DEALLOCATE ALL", P,
     effects="execute=p deallocate[1]=p deallocate[2]")
case("CTAS execute", "CREATE TABLE t2 AS EXECUTE p(3)", P, effects="execute=p")
case("COPY from refused", "COPY policies FROM STDIN", J, sqlstate="0A000", msg="use INSERT")
case("COPY from csv refused", "COPY public.policies (tenant_id, name) FROM STDIN WITH (FORMAT csv)", J, sqlstate="0A000")
case("COPY from binary file refused", "COPY policies FROM '/tmp/x' WITH (FORMAT binary)", J, sqlstate="0A000")
case("COPY to passes", "COPY policies TO STDOUT", P, events="")
case("COPY query to", "COPY (INSERT INTO policies (tenant_id, name) VALUES (1, 'a') RETURNING id) TO STDOUT", R)
case("COPY other table", "COPY staging_policies_import FROM STDIN", P)

# --------------------------------------------------------------- effects
case("FX set path", "SET search_path = a, \"B\"", P, effects="set_path=a, \"B\"")
case("FX set path string", "SET search_path TO 'a, b'", P, effects='set_path="a, b"')
case("FX set local", "SET LOCAL search_path = x", P, effects="set_local_path=x")
case("FX set default", "SET search_path TO DEFAULT", P, effects="reset_path")
case("FX set local default", "SET LOCAL search_path TO DEFAULT", P, effects="reset_path+l")
case("FX reset", "RESET search_path", P, effects="reset_path")
case("FX reset all", "RESET ALL", P, effects="lexing reset_path")
case("FX set schema", "SET SCHEMA 'x'", P, effects="set_path=x")
case("FX set from current", "SET search_path FROM CURRENT", P, effects="path_unknown")
case("FX role", "SET ROLE app", P, effects="path_unknown=role")
case("FX reset role", "RESET ROLE", P, effects="path_unknown=role")
case("FX session authorization", "SET SESSION AUTHORIZATION app", P, effects="path_unknown=role")
case("FX other guc", "SET application_name = 'x'", P, effects="")
case("FX set_config literal", "SELECT set_config('search_path', 'a,b', false)", P, effects="set_path=a,b")
case("FX set_config local", "SELECT pg_catalog.set_config('search_path', 'a', true)", P, effects="set_local_path=a")
case("FX set_config param", "SELECT set_config('search_path', $1, false)", P, effects="path_unknown")
case("FX set_config with from", "SELECT set_config('search_path', 'a', false) FROM t", P, effects="path_unknown")
case("FX set_config other guc", "SELECT set_config('application_name', 'x', false)", P, effects="")
case("FX set_config name param", "SELECT set_config($1, 'x', false)", P, effects="path_unknown lexing")
case("FX set standard_conforming_strings", "SET standard_conforming_strings = off", P, effects="lexing")
case("FX set names", "SET NAMES 'SJIS'", P, effects="lexing")
case("FX set_config client_encoding", "SELECT set_config('client_encoding', 'UTF8', false)", P, effects="lexing")
case("FX set_config role", "SELECT set_config('role', 'x', false)", P, effects="path_unknown=role")
case("FX set_config user schema", "SELECT myschema.set_config('search_path', 'x', false)", P, effects="")
case("FX pg_settings update", "UPDATE pg_settings SET setting = 'a' WHERE name = 'search_path'", P,
     effects="path_unknown lexing")
case("FX pg_settings qualified in a CTE",
     "WITH x AS (UPDATE pg_catalog.pg_settings SET setting = 'a' WHERE name = 'search_path' RETURNING 1) "
     "SELECT 1", P, effects="path_unknown lexing")
case("FX pg_settings of another schema", "UPDATE myschema.pg_settings SET setting = 'a'", P, effects="")
case("pf pg_settings anywhere", "SELECT 1; update PG_SETTINGS set setting = 'a' where name = 'search_path'", P,
     effects="path_unknown[1] lexing[1]")
case("FX discard", "DISCARD ALL; DISCARD TEMP; DISCARD PLANS", P, effects="discard_all lexing discard_temp[1]")
case("FX create temp", "CREATE TEMP TABLE policies (id int)", P, effects="create_temp=policies")
case("FX create temp on commit drop", "CREATE TEMP TABLE policies (id int) ON COMMIT DROP", P, effects="create_temp=policies+l")
case("FX create pg_temp", "CREATE TABLE pg_temp.policies (id int)", P, effects="create_temp=policies")
case("FX create temp other name", "CREATE TEMP TABLE users (id int)", P, flags=["prefiltered"])
case("FX create table not temp", "CREATE TABLE policies_archive (id int)", P, effects="")
case("FX create temp as", "CREATE TEMP TABLE policies AS SELECT * FROM public.policies", P, effects="create_temp=policies")
case("FX select into temp", "SELECT * INTO TEMP policies FROM x", P, effects="create_temp=policies")
case("FX drop", "DROP TABLE policies; DROP TABLE pg_temp.policies, users", P,
     effects="drop_rel=policies drop_rel[1]=pg_temp.policies")
case("FX savepoints", "SAVEPOINT a; RELEASE a; ROLLBACK TO a; ROLLBACK TO SAVEPOINT b; ROLLBACK", P,
     effects="savepoint=a release[1]=a rollback_to[2]=a rollback_to[3]=b")
case("FX unparsable set", "SET search_path =", P, effects="path_unknown", flags=["parse_failed"])

# --------------------------------------------------------- beyond sight
case("BEYOND do", "DO $$ BEGIN INSERT INTO policies (tenant_id, name) VALUES (1, 'x'); END $$", P,
     events="passed/beyond_sight/policies", effects="path_unknown lexing")
# a DO block is like a CALL: what it does to search_path outlives it
case("pf leading do", "DO $$ BEGIN PERFORM set_config('search_path', 'a', false); END $$", P,
     effects="path_unknown lexing")
case("pf leading do, no needle", "do $$ begin perform my_path_changer(); end $$", P,
     effects="path_unknown lexing")
# a cursor's query runs at FETCH: one that changes the session is refused
case("cursor with set_config", "DECLARE c CURSOR FOR SELECT set_config('search_path', 'a', false)", J,
     sqlstate="0A000", msg="a cursor whose query changes session settings", effects="")
case("cursor with set_config observed", "DECLARE c CURSOR FOR SELECT set_config('search_path', 'a', false)", P,
     mode="observe", effects="path_unknown", flags=["observed"])
case("cursor plain", "DECLARE c CURSOR FOR SELECT * FROM policies", P)
case("BEYOND function", "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ INSERT INTO policies (tenant_id, name) VALUES (1, 'x') $$", P,
     events="passed/beyond_sight/policies")
case("BEYOND sql body", "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO policies (tenant_id, name) VALUES (1, 'x'); END", P,
     events="passed/beyond_sight/policies")
case("BEYOND trigger", "CREATE TRIGGER t BEFORE INSERT ON policies FOR EACH ROW EXECUTE FUNCTION f()", P,
     events="passed/beyond_sight/policies")
case("BEYOND rule", "CREATE RULE r AS ON INSERT TO x DO INSTEAD INSERT INTO policies (tenant_id, name) VALUES (1, 'x')", P,
     events="passed/beyond_sight/policies")
case("BEYOND view", "CREATE VIEW v AS SELECT * FROM policies", P, events="passed/beyond_sight/policies")
case("BEYOND observe", "DO $$ BEGIN UPDATE findings SET tenant_id = 1; END $$", P, mode="observe",
     events="passed/beyond_sight/findings", flags=["observed"])
case("BEYOND procedure call", "CALL refresh_policies()", P, events="", effects="path_unknown lexing")
case("FX call unknown path", "CALL maintenance()", P, effects="path_unknown lexing", notflags=["prefiltered"])

# ------------------------------------------------------------------ DDL
case("DDL rename table", "ALTER TABLE policies RENAME TO p2", J, sqlstate="0A000", msg="renaming the watched table policies")
case("DDL rename tenant column", "ALTER TABLE policies RENAME COLUMN tenant_id TO t", J, sqlstate="0A000")
case("DDL rename other column", "ALTER TABLE policies RENAME COLUMN name TO n", P)
case("DDL rename schema", "ALTER SCHEMA public RENAME TO x", J, sqlstate="0A000", msg="schema public")
case("DDL rename other schema", "ALTER SCHEMA staging RENAME TO x", P)
case("DDL set schema", "ALTER TABLE policies SET SCHEMA x", J, sqlstate="0A000")
case("DDL type using", "ALTER TABLE policies ALTER COLUMN workspace_id TYPE bigint USING 5", J, sqlstate="0A000")
case("DDL harmless", "ALTER TABLE policies ADD COLUMN x int; CREATE INDEX ON policies (tenant_id); TRUNCATE policies; GRANT SELECT ON policies TO app; LOCK TABLE policies", P, events="")
case("DDL observe rename", "ALTER TABLE policies RENAME TO p2", P, mode="observe", events="refused/form/policies")
case("DDL other table rename", "ALTER TABLE staging RENAME TO policies_old", P)

# ---------------------------------------------------------- fail closed
case("FAIL unparsable insert", "INSERT INTO policies VALUES (", J, sqlstate="0A000", msg="could not be parsed",
     flags=["parse_failed"], events="refused/form/policies")
case("FAIL unparsable observe", "INSERT INTO policies VALUES (", P, mode="observe", flags=["parse_failed", "observed"])
case("FAIL unparsable off", "INSERT INTO policies VALUES (", P, mode="off", flags=["parse_failed"], events="")
case("FAIL unparsable multi", "SELEC 1; INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", J, sqlstate="0A000")
case("FAIL unparsable u&", "SELECT U&\"\\0070olicies\" FROM", J, sqlstate="0A000")
case("FAIL newer syntax", "MERGE INTO policies p USING s ON true WHEN MATCHED THEN UPDATE SET name = 'x' RETURNING *", J, sqlstate="0A000")
case("FAIL client only encoding", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", J, env="coe", sqlstate="0A000",
     msg="client encoding")
case("FAIL client only encoding observe", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')", P, env="coe", mode="observe",
     flags=["observed"])
case("FAIL client only encoding unrelated", "SELECT * FROM users", P, env="coe", flags=["prefiltered"])
case("FAIL nul byte", "INSERT INTO policies (tenant_id, name) VALUES (1, 'a')\\0; DELETE FROM x", J, sqlstate="0A000", nul=True)
case("DELETE watched", "DELETE FROM policies WHERE id = 1", P, events="seen//policies passed//policies")
case("UPDATE other column watched", "UPDATE findings SET severity = 'high' WHERE id = 1", P, events="seen//findings passed//findings")


# ------------------------------------------------------------- generator

def c_str(s):
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\0":
            out.append("\\0")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


SAMPLES = {}


def macroize(s):
    """Write the long typed samples as macros, so the goldens read like the shapes."""
    lit = c_str(s)
    for tbl, macro in (("policies", "P"), ("audit_logs", "A"), ("backup_items", "BI")):
        for col, m2 in (("tenant_id", "T"), ("workspace_id", "W")):
            sample = f'(NULL::"public"."{tbl}")."{col}"'
            lit = lit.replace(c_str(sample)[1:-1], f'" {m2}S_{macro} "')
    lit = lit.replace('"" ', "").replace(' ""', "")
    return lit


def run_case(rw, c):
    args = []
    mode = c.get("mode", "enforce")
    parts = mode.split(",")
    args += ["--mode", parts[0]]
    for p in parts[1:]:
        args += ["--table-mode", p]
    env = c.get("env")
    if env:
        for item in env.split("|"):
            if item.startswith("path="):
                args += ["--path", item[5:]]
            elif item.startswith("temp="):
                args += ["--temp", item[5:]]
            elif item.startswith("rel="):
                args += ["--rel", item[4:]]
            elif item == "rels":
                args += ["--rels-known"]
            elif item == "std=off":
                args += ["--std-strings", "off"]
            elif item == "coe":
                args += ["--client-only-encoding"]
    if c.get("proto"):
        args += ["--extended"]
    if c.get("catalog"):
        args += ["--catalog", c["catalog"]]
    sql = c["sql"].replace("\\0", "\0") if c.get("nul") else c["sql"]
    r = subprocess.run([rw, *args], input=sql.encode(), capture_output=True, check=True)
    return json.loads(r.stdout)


def events_str(d):
    return " ".join(f"{e['kind']}/{'' if e['rule'] == 'none' else e['rule']}/{e['table'] or ''}" for e in d["events"])


def effects_str(d):
    out = []
    for e in d["effects"]:
        s = e["kind"]
        if e["stmt"]:
            s += f"[{e['stmt']}]"
        if e["arg"] is not None:
            s += "=" + e["arg"]
        if e["writes_watched"]:
            s += "+w"
        if e["local"]:
            s += "+l"
        out.append(s)
    return " ".join(out)


def main():
    rw = sys.argv[1]
    problems = []
    rows = []
    names = set()
    for c in CASES:
        assert c["name"] not in names, c["name"]
        names.add(c["name"])
        d = run_case(rw, c)
        why = []
        if d["action"] != c["action"]:
            why.append(f"action {d['action']}")
        if c.get("sqlstate") and d["sqlstate"] != c["sqlstate"]:
            why.append(f"sqlstate {d['sqlstate']}")
        if c.get("msg") and c["msg"] not in (d["message"] or ""):
            why.append(f"message {d['message']!r}")
        for h in c.get("has", []):
            if h not in (d["text"] or ""):
                why.append(f"text lacks {h!r}: {d['text']!r}")
        if c.get("out") is not None and d["text"] != c["out"]:
            why.append(f"text {d['text']!r}")
        for f in c.get("flags", []):
            if f not in d["flags"]:
                why.append(f"flag {f} missing {d['flags']}")
        for f in c.get("notflags", []):
            if f in d["flags"]:
                why.append(f"flag {f} set")
        if c.get("events") is not None and events_str(d) != c["events"]:
            why.append(f"events {events_str(d)!r}")
        if c.get("effects") is not None and effects_str(d) != c["effects"]:
            why.append(f"effects {effects_str(d)!r}")
        if why:
            problems.append(f"{c['name']}: " + "; ".join(why))
        rows.append((c, d))
    if problems:
        sys.stderr.write("\n".join(problems) + "\n")
        sys.exit(1)
    w = sys.stdout.write
    w("/* Generated by tests/tools/gen_rewrite_cases.py from its reviewed case list -- edit\n"
      " * the list there and regenerate; the outcome checks live there too. */\n")
    w('#include "tests/unit/test_rewrite.h"\n\n')
    w("const rw_case rw_cases[] = {\n")
    for c, d in rows:
        w("    {\n")
        w(f"        .name = {c_str(c['name'])},\n")
        if c.get("mode", "enforce") != "enforce":
            w(f"        .mode = {c_str(c['mode'])},\n")
        if c.get("env"):
            w(f"        .env = {c_str(c['env'])},\n")
        if c.get("proto"):
            w("        .proto = RW_PROTO_EXTENDED,\n")
        if c.get("catalog"):
            w(f"        .catalog = {c_str(c['catalog'])},\n")
        sql = c["sql"].replace("\\0", "\0") if c.get("nul") else c["sql"]
        w(f"        .sql = {c_str(sql)},\n")
        if c.get("nul"):
            w(f"        .sql_len = {len(sql.encode())},\n")
        w(f"        .action = RW_{d['action'].upper()},\n")
        if d["text"] is not None:
            w(f"        .out = {macroize(d['text'])},\n")
        if d["sqlstate"]:
            w(f"        .sqlstate = {c_str(d['sqlstate'])},\n")
        if c.get("msg"):
            w(f"        .msg = {c_str(c['msg'])},\n")
        w(f"        .events = {c_str(events_str(d))},\n")
        w(f"        .effects = {c_str(effects_str(d))},\n")
        fl = " | ".join("RW_F_" + f.upper() for f in d["flags"]) or "0"
        w(f"        .flags = {fl},\n")
        w("    },\n")
    w("};\n\n")
    w(f"const int rw_n_cases = {len(rows)};\n")
    sys.stderr.write(f"{len(rows)} cases\n")


if __name__ == "__main__":
    main()
