"""Look-alikes, a second review (README "Enforcement", "Fail closed", "Look-alikes"): what
holds beyond test_enforce_lookalikes.py -- DDL forms other than RENAME / ALTER COLUMN TYPE /
SET SCHEMA pinned after an unseen path move, writes hidden in EXPLAIN ANALYZE and COPY (query),
the target of UPDATE ... FROM and MERGE whose source has the same name, and prepared
statements and portals across a SET search_path through the extended protocol (pipelined too).

Every look-alike exists before any login of this module, and every test sets the path it means.
"""
import psycopg
import pytest

import tgtest
from tgtest import simple, simple_all

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
BAD = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, '{}')"    # R2 on the watched table
STALE = ('tenantguard: prepared statement "{}" was prepared under another enforcement policy or '
         'search_path and would now be rewritten; prepare it again')

COLS = "(id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, name text)"

DDL = [
    "CREATE SCHEMA other AUTHORIZATION app",
    f"CREATE TABLE other.policies {COLS}",
    "CREATE FUNCTION other.to_public() RETURNS text LANGUAGE sql AS "
    "$$ SELECT set_config('search_path', 'public', false) $$",
    "CREATE FUNCTION other.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "CREATE TRIGGER noop BEFORE INSERT ON other.policies FOR EACH ROW EXECUTE FUNCTION other.noop()",
    "CREATE TRIGGER noop BEFORE INSERT ON public.policies FOR EACH ROW EXECUTE FUNCTION other.noop()",
]

LOOKALIKES = ["other.policies"]


@pytest.fixture(scope="module")
def ldb(edb):
    for s in DDL:
        edb.pg.psql(s, db=edb.name, user="app")
    return edb


@pytest.fixture
def ldata(ldb):
    ldb.reset()
    with ldb.direct() as c:
        c.execute("TRUNCATE " + ", ".join(LOOKALIKES) + " RESTART IDENTITY")
    return ldb


@pytest.fixture
def conn(eproxy, ldata):
    c = psycopg.connect(eproxy.dsn(db=ldata.name), autocommit=True)
    yield c
    c.close()


def watched(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM public.policies ORDER BY id")


def rows(db, table):
    return db.rows(f"SELECT tenant_id, workspace_id, name FROM {table} ORDER BY id")


def ok(out):
    assert out.ok, out
    return out


def rejected(out, sqlstate="42501", message=None):
    assert out.sqlstate == sqlstate, out
    if message:
        assert out.message == message, out


def to_public(conn):
    assert ok(simple(conn, "SELECT other.to_public()")).rows == [["public"]]


def moved(conn):
    ok(simple(conn, "SET search_path = other"))
    to_public(conn)


def errors(msgs):
    return [(e["C"], e["M"]) for e in tgtest.errors_of(msgs)]


# ------------------------------------------------------------------ DDL after an unseen move

def columns(db, table):
    return db.rows("SELECT attname::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attribute a "
                   "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                   f"WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")


def table_flags(db, table):
    return db.rows("SELECT relrowsecurity, (SELECT tgenabled FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid "
                   f"AND t.tgname = 'noop') FROM pg_catalog.pg_class c WHERE c.oid = '{table}'::regclass")


@pytest.mark.parametrize("ddl", [
    "ALTER TABLE policies ALTER COLUMN workspace_id SET DEFAULT 1",
    "ALTER TABLE policies ADD COLUMN extra int",
    "ALTER TABLE ONLY policies DROP COLUMN name",
    "ALTER TABLE IF EXISTS policies DISABLE TRIGGER ALL",
    "ALTER TABLE policies DISABLE TRIGGER noop",
    "ALTER TABLE policies ENABLE ROW LEVEL SECURITY",
    "ALTER TRIGGER noop ON policies RENAME TO noop2",
])
def test_alter_forms_are_pinned_after_a_move(conn, ldata, ddl):
    """Every ALTER TABLE form (and ALTER TRIGGER ... ON) goes through the pin, not only the
    refused ones: after an unseen move it changes the look-alike, never the watched table.
    Each runs in a transaction rolled back, so the module's tables stay as they are."""
    before = (columns(ldata, "public.policies"), table_flags(ldata, "public.policies"))
    decoy = (columns(ldata, "other.policies"), table_flags(ldata, "other.policies"))
    ok(simple(conn, "BEGIN"))
    moved(conn)
    ok(simple(conn, ddl))
    assert (simple(conn, "SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute WHERE attrelid = "
                         "'public.policies'::regclass AND attnum > 0 AND NOT attisdropped").rows ==
            [[str(len(before[0]))]])
    changed_public = ok(simple(conn, "SELECT c.relrowsecurity, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
                                     "(SELECT tgenabled FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND "
                                     "t.tgname = 'noop') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_attrdef d "
                                     "ON d.adrelid = c.oid AND d.adnum = (SELECT a.attnum FROM pg_catalog.pg_attribute a WHERE "
                                     "a.attrelid = c.oid AND a.attname = 'workspace_id') "
                                     "WHERE c.oid = 'public.policies'::regclass"
                               )).rows
    changed_other = ok(simple(conn, "SELECT c.relrowsecurity, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
                                    "(SELECT tgenabled FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND "
                                    "t.tgname = 'noop'), (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a "
                                    "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
                                    "FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_attrdef d "
                                    "ON d.adrelid = c.oid AND d.adnum = 3 WHERE c.oid = 'other.policies'::regclass"
                              )).rows
    ok(simple(conn, "ROLLBACK"))
    # the watched table: no RLS, no default on workspace_id, its trigger enabled
    assert changed_public == [["f", None, "O"]], changed_public
    # the look-alike got the change
    assert changed_other != [["f", None, "O", "4"]], changed_other
    assert (columns(ldata, "public.policies"), table_flags(ldata, "public.policies")) == before
    assert (columns(ldata, "other.policies"), table_flags(ldata, "other.policies")) == decoy


# ------------------------------------------------------------------ writes inside other statements

@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE " + BAD.format("explain"),
    "EXPLAIN (ANALYZE, COSTS off) " + BAD.format("explain"),
    "WITH a AS (" + BAD.format("cte-1") + " RETURNING 1), b AS (" + BAD.format("cte-2") + " RETURNING 1) "
    "UPDATE policies SET workspace_id = 1 WHERE name = 'seed'",
    "UPDATE policies SET workspace_id = 1 FROM policies p2 WHERE p2.id = policies.id",
    "MERGE INTO policies USING policies s ON s.id = policies.id WHEN MATCHED THEN UPDATE SET workspace_id = 1",
    "DELETE FROM policies USING policies p2 WHERE p2.id = policies.id",
    "SELECT other.to_public(); SELECT other.to_public(); " + BAD.format("twice"),
])
def test_hidden_and_repeated_targets_stay_off_the_watched_table_after_a_move(conn, ldata, sql):
    ldata.execute("INSERT INTO public.policies (tenant_id, workspace_id, name) VALUES (3, 2, 'seed')")
    ldata.execute("INSERT INTO other.policies (tenant_id, workspace_id, name) VALUES (3, 2, 'seed')")
    moved(conn)
    outs = simple_all(conn, sql)
    assert all(o.ok for o in outs), outs
    assert watched(ldata) == [(3, 2, "seed")]


def test_copy_of_a_writing_query_is_pinned_after_a_move(conn, ldata):
    moved(conn)
    with conn.cursor() as cur:
        with cur.copy("COPY (" + BAD.format("copy-query") + " RETURNING name) TO STDOUT") as cp:
            assert [bytes(b) for b in cp] == [b"copy-query\n"]
    assert rows(ldata, "other.policies") == [(3, 1, "copy-query")]
    assert watched(ldata) == []


def test_explain_without_analyze_runs_nothing(conn, ldata):
    moved(conn)
    ok(simple(conn, "EXPLAIN (ANALYZE false) " + BAD.format("not-run")))
    assert watched(ldata) == [] and rows(ldata, "other.policies") == []


# ------------------------------------------------------------------ prepared statements and portals

def test_unnamed_statement_bound_again_after_set_is_refused(eproxy, ldata):
    """Parse (unnamed) under a look-alike path, then SET public and a Bind of the same
    unnamed statement: PostgreSQL would look the name up again (the watched table); the pin
    would send it to the look-alike, so it is refused."""
    with eproxy.wire() as w:
        w.login(database=ldata.name)
        w.query("SET search_path = other")
        w.send(w.parse_msg(BAD.format("unnamed")) + w.bind_msg() + w.execute_msg() + w.SYNC)
        assert errors(w.read_until("Z")) == []
        w.query("SET search_path = public")
        w.send(w.bind_msg() + w.execute_msg() + w.SYNC)
        assert errors(w.read_until("Z")) == [("0A000", STALE.format(""))]
    assert rows(ldata, "other.policies") == [(3, 1, "unnamed")]
    assert watched(ldata) == []


def test_a_set_pipelined_ahead_of_a_bind_refuses_the_pinned_statement(eproxy, ldata):
    """Query SET search_path = public, then at once (no wait) Bind/Execute of a statement
    parsed under the look-alike path: the change in flight makes it stale."""
    with eproxy.wire() as w:
        w.login(database=ldata.name)
        w.query("SET search_path = other")
        w.send(w.parse_msg(BAD.format("s2"), name="s2") + w.SYNC)
        assert errors(w.read_until("Z")) == []
        w.send(w.query_msg("SET search_path = public") + w.bind_msg(stmt="s2") + w.execute_msg() + w.SYNC)
        assert errors(w.read_until("Z") + w.read_until("Z")) == [("0A000", STALE.format("s2"))]
    assert rows(ldata, "other.policies") == [] and watched(ldata) == []


def test_a_portal_runs_what_it_was_bound_to(eproxy, ldata):
    """A named portal bound under the look-alike path and executed after SET public runs
    the plan of its Bind on PostgreSQL too: the look-alike, not the watched table."""
    with eproxy.wire() as w:
        w.login(database=ldata.name)
        w.query("BEGIN")
        w.query("SET search_path = other")
        w.send(w.parse_msg(BAD.format("portal"), name="s1") + w.bind_msg(portal="p1", stmt="s1") + w.SYNC)
        assert errors(w.read_until("Z")) == []
        w.query("SET search_path = public")
        w.send(w.execute_msg(portal="p1") + w.SYNC)
        assert errors(w.read_until("Z")) == []
        w.query("COMMIT")
    assert rows(ldata, "other.policies") == [(3, 1, "portal")]
    assert watched(ldata) == []


def test_psycopg_pipeline_set_then_prepared(conn, ldata):
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)"
    ok(simple(conn, "SET search_path = other"))
    conn.execute(sql, (3, 1, "pl-1"), prepare=True)
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        with conn.pipeline():
            conn.execute("SET search_path = public")
            conn.execute(sql, (3, 1, "pl-2"), prepare=True)
    assert rows(ldata, "other.policies") == [(3, 1, "pl-1")]
    assert watched(ldata) == []


def test_auto_prepare_loop_across_paths(eproxy, ldata):
    """psycopg's auto-prepare (threshold 0: every statement prepared) while the path moves
    between the look-alike and public: every execution lands where PostgreSQL would put it
    (public: enforced, R2), or is refused; the watched table gets nothing unchecked."""
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)"
    with psycopg.connect(eproxy.dsn(db=ldata.name), autocommit=True) as c:
        c.prepare_threshold = 0
        for i, path in enumerate(["other", "public", "other", "public", "other"]):
            ok(simple(c, f"SET search_path = {path}"))
            try:
                c.execute(sql, (3, 1, f"loop-{i}"))
            except (psycopg.errors.FeatureNotSupported, psycopg.errors.InsufficientPrivilege):
                pass
    assert watched(ldata) == []
    assert all(r[2].startswith("loop-") for r in rows(ldata, "other.policies"))
