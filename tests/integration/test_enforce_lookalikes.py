"""Look-alikes: relations named like a watched table in other schemas (README "Enforcement",
"Look-alikes").

The login probe learns which other schemas hold a table, view, foreign or partitioned table
named like a watched one. On a known search_path an unqualified write goes to the watched
table (enforced), is pinned to the look-alike the path finds first ("schema".name), or -- the
name found nowhere -- is enforced as the watched table's. So a search_path changed where the
proxy cannot see (inside a function) never sends a write into the watched table unchecked.

Every look-alike here exists before any login of this module (the layout cache keeps a
login's list for layout_cache_ttl), and every test sets the path it means.
"""
import psycopg
import pytest

from tgtest import simple, simple_all

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
BAD = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, '{}')"    # R2 on the watched table
BARE = "INSERT INTO policies (tenant_id, name) VALUES (3, '{}')"                    # R1 on the watched table

COLS = "(id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, name text)"

# schema as created, the same as a search_path element
QUOTED = {
    "Other": '"Other"',
    'we"ird.sch': '"we""ird.sch"',
    "two words": '"two words"',
}

DDL = [
    "CREATE SCHEMA other AUTHORIZATION app",
    f"CREATE TABLE other.policies {COLS}",
    "CREATE FUNCTION other.to_public() RETURNS text LANGUAGE sql AS "
    "$$ SELECT set_config('search_path', 'public', false) $$",
    "CREATE SCHEMA empty AUTHORIZATION app",
    # relation kinds the probe lists
    "CREATE SCHEMA vw AUTHORIZATION app",
    f"CREATE TABLE vw.base {COLS}",
    "CREATE VIEW vw.policies AS SELECT * FROM vw.base",
    "CREATE SCHEMA pt AUTHORIZATION app",
    "CREATE TABLE pt.policies (id bigserial, tenant_id bigint, workspace_id bigint, name text) "
    "PARTITION BY LIST (tenant_id)",
    "CREATE TABLE pt.policies_all PARTITION OF pt.policies DEFAULT",
    # relation kinds it does not list: a write there fails on the server anyway
    "CREATE SCHEMA mv AUTHORIZATION app",
    "CREATE MATERIALIZED VIEW mv.policies AS SELECT 1::bigint AS tenant_id, 1::bigint AS workspace_id, "
    "'x'::text AS name",
    "CREATE SCHEMA sq AUTHORIZATION app",
    "CREATE SEQUENCE sq.policies",
    "CREATE SCHEMA ty AUTHORIZATION app",
    "CREATE TYPE ty.policies AS (tenant_id bigint, workspace_id bigint, name text)",
    "CREATE SCHEMA ix AUTHORIZATION app",
    f"CREATE TABLE ix.t {COLS}",
    "CREATE INDEX policies ON ix.t (tenant_id)",
    # "$user" of the login role app
    "CREATE SCHEMA app AUTHORIZATION app",
    f"CREATE TABLE app.policies {COLS}",
] + [s for name, q in QUOTED.items() for s in (f"CREATE SCHEMA {q} AUTHORIZATION app",
                                                 f"CREATE TABLE {q}.policies {COLS}")]

# owned by postgres, no USAGE for app: the server's name lookup skips it
DDL_SUPER = [
    "CREATE SCHEMA secret",
    f"CREATE TABLE secret.policies {COLS}",
]

LOOKALIKE_TABLES = ["other.policies", "vw.base", "pt.policies", "app.policies"] + \
    [f"{q}.policies" for q in QUOTED.values()]


@pytest.fixture(scope="module")
def ldb(edb):
    for s in DDL:
        edb.pg.psql(s, db=edb.name, user="app")
    for s in DDL_SUPER:
        edb.pg.psql(s, db=edb.name, user="postgres")
    return edb


@pytest.fixture
def ldata(ldb):
    ldb.reset()
    with ldb.direct() as c:
        c.execute("TRUNCATE " + ", ".join(LOOKALIKE_TABLES) + " RESTART IDENTITY")
    with ldb.direct(user="postgres") as c:
        c.execute("TRUNCATE secret.policies RESTART IDENTITY")
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


def enforced(conn, db, tag):
    before = watched(db)
    rejected(simple(conn, BAD.format(tag)), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format(tag)))
    assert watched(db) == before + [(3, 2, tag)]


# ------------------------------------------------------------------ names that need quotes

@pytest.mark.parametrize("schema", list(QUOTED))
def test_a_quoted_lookalike_schema_is_pinned_by_its_exact_name(conn, ldata, schema):
    """Mixed case, a double quote and a dot, a space: the pin names the schema exactly, so the
    write lands in the look-alike, as sent, also once a function has moved the path."""
    table = f"{QUOTED[schema]}.policies"
    ok(simple(conn, f"SET search_path = {QUOTED[schema]}"))
    ok(simple(conn, BAD.format("on-path")))
    to_public(conn)
    ok(simple(conn, BAD.format("moved")))
    ok(simple(conn, BARE.format("moved-bare")))
    assert rows(ldata, table) == [(3, 1, "on-path"), (3, 1, "moved"), (3, None, "moved-bare")]
    assert watched(ldata) == []


@pytest.mark.parametrize("spelling", ['"policies"', 'U&"poli\\0063ies"', "U&\"p!006flicies\" UESCAPE '!'",
                                      "/* c */ policies", "POLICIES"])
def test_every_spelling_of_the_name_is_pinned(conn, ldata, spelling):
    """The schema goes in front of the name's first token, whatever its spelling."""
    ok(simple(conn, "SET search_path = other"))
    to_public(conn)
    ok(simple(conn, f"INSERT INTO {spelling} (tenant_id, workspace_id, name) VALUES (3, 1, 'spelled')"))
    assert rows(ldata, "other.policies") == [(3, 1, "spelled")]
    assert watched(ldata) == []


def test_a_mixed_case_path_element_unquoted_is_folded(conn, ldata):
    """SET search_path = Other (unquoted) means schema other, not "Other"."""
    ok(simple(conn, "SET search_path = Other"))
    to_public(conn)
    ok(simple(conn, BAD.format("folded")))
    assert rows(ldata, "other.policies") == [(3, 1, "folded")]
    assert rows(ldata, '"Other".policies') == []
    assert watched(ldata) == []


def test_user_schema_lookalike(conn, ldata):
    """"$user" is the login role's schema (app): its policies is a look-alike and is pinned."""
    ok(simple(conn, 'SET search_path = "$user", public'))
    ok(simple(conn, BAD.format("user")))
    to_public(conn)
    ok(simple(conn, BAD.format("user-moved")))
    assert rows(ldata, "app.policies") == [(3, 1, "user"), (3, 1, "user-moved")]
    assert watched(ldata) == []


def test_explicit_pg_temp_and_late_pg_catalog(conn, ldata):
    ok(simple(conn, "SET search_path = pg_temp, other, pg_catalog, public"))
    ok(simple(conn, BAD.format("explicit")))
    to_public(conn)
    ok(simple(conn, BAD.format("explicit-moved")))
    assert rows(ldata, "other.policies") == [(3, 1, "explicit"), (3, 1, "explicit-moved")]
    assert watched(ldata) == []


# ------------------------------------------------------------------ relation kinds

@pytest.mark.parametrize("schema,table", [("vw", "vw.base"), ("pt", "pt.policies")])
def test_view_and_partitioned_lookalikes_are_pinned(conn, ldata, schema, table):
    ok(simple(conn, f"SET search_path = {schema}"))
    ok(simple(conn, BAD.format(schema)))
    to_public(conn)
    ok(simple(conn, BAD.format(schema + "-moved")))
    assert rows(ldata, table) == [(3, 1, schema), (3, 1, schema + "-moved")]
    assert watched(ldata) == []


@pytest.mark.parametrize("schema", ["mv", "sq", "ty", "ix"])
def test_kinds_the_probe_does_not_list_fail_then_enforce(conn, ldata, schema):
    """A materialized view, sequence, composite type or index named policies is not listed:
    the name counts as found nowhere. On the server the write fails as it would without the
    proxy; once a function has moved the path it is the watched table's, enforced."""
    ok(simple(conn, f"SET search_path = {schema}"))
    out = simple(conn, BAD.format(schema))
    assert out.sqlstate in ("42809", "42703"), out   # wrong kind; a sequence has no such column
    assert watched(ldata) == []
    to_public(conn)
    enforced(conn, ldata, schema + "-moved")


def test_a_schema_without_usage_is_skipped_as_the_server_skips_it(conn, ldata):
    """secret.policies exists but app may not use schema secret: the server's lookup passes it
    by and writes public.policies, which is enforced (not pinned to a permission error)."""
    ok(simple(conn, "SET search_path = secret, public"))
    enforced(conn, ldata, "no-usage")
    assert ldata.rows("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'policies' AND "
                      "relnamespace = 'secret'::regnamespace") == [(1,)]


def test_a_path_without_the_name_is_enforced_once_moved(conn, ldata):
    ok(simple(conn, "SET search_path = empty"))
    rejected(simple(conn, BARE.format("nowhere")), "42P01")
    to_public(conn)
    enforced(conn, ldata, "nowhere-moved")


# ------------------------------------------------------------------ every write form, after a move

FORMS = [
    "UPDATE policies SET workspace_id = 1, name = 'upd' WHERE tenant_id = 3",
    "UPDATE policies SET workspace_id = 1",
    "DELETE FROM policies",
    "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'oc') ON CONFLICT DO NOTHING",
    "MERGE INTO policies p USING (VALUES (3::bigint, 1::bigint, 'merge')) s (t, w, n) ON p.tenant_id = s.t "
    "WHEN MATCHED THEN UPDATE SET workspace_id = s.w WHEN NOT MATCHED THEN INSERT (tenant_id, workspace_id, name) "
    "VALUES (s.t, s.w, s.n)",
    "WITH w AS (INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'cte') RETURNING id) "
    "SELECT count(*) FROM w",
    "WITH d AS (DELETE FROM policies RETURNING id) SELECT count(*) FROM d",
    "SELECT other.to_public(); INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'same-query')",
]


@pytest.mark.parametrize("sql", FORMS)
def test_every_write_form_stays_off_the_watched_table_after_a_move(conn, ldata, sql):
    ldata.execute("INSERT INTO public.policies (tenant_id, workspace_id, name) VALUES (3, 2, 'seed')")
    ldata.execute("INSERT INTO other.policies (tenant_id, workspace_id, name) VALUES (3, 2, 'decoy')")
    ok(simple(conn, "SET search_path = other"))
    to_public(conn)
    outs = simple_all(conn, sql)
    assert all(o.ok for o in outs), outs
    assert watched(ldata) == [(3, 2, "seed")]


def test_copy_from_after_a_move_lands_in_the_lookalike(conn, ldata):
    ok(simple(conn, "SET search_path = other"))
    to_public(conn)
    with conn.cursor() as cur:
        with cur.copy("COPY policies (tenant_id, workspace_id, name) FROM STDIN") as cp:
            cp.write_row((3, 1, "copied"))
    assert rows(ldata, "other.policies") == [(3, 1, "copied")]
    assert watched(ldata) == []


# ------------------------------------------------------------------ prepared statements

def test_sql_prepare_under_a_lookalike_runs_off_the_watched_table_after_a_move(conn, ldata):
    ok(simple(conn, "SET search_path = other"))
    ok(simple(conn, "PREPARE ins AS " + BAD.format("prepared")))
    to_public(conn)
    ok(simple(conn, "EXECUTE ins"))
    assert rows(ldata, "other.policies") == [(3, 1, "prepared")]
    assert watched(ldata) == []


def test_protocol_prepare_under_a_lookalike_runs_off_the_watched_table_after_a_move(conn, ldata):
    ok(simple(conn, "SET search_path = other"))
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)"
    conn.execute(sql, (3, 1, "proto-1"), prepare=True)
    to_public(conn)
    conn.execute(sql, (3, 1, "proto-2"), prepare=True)
    assert rows(ldata, "other.policies") == [(3, 1, "proto-1"), (3, 1, "proto-2")]
    assert watched(ldata) == []


def test_prepared_under_public_stays_enforced_on_a_lookalike_path(conn, ldata):
    """Prepared where the path finds the watched table, run after SET to a look-alike path:
    PostgreSQL analyses it again under the new path (the look-alike), and it carries the
    checks whatever it resolves to; the watched table gets nothing unchecked."""
    ok(simple(conn, "SET search_path = public"))
    ok(simple(conn, "PREPARE ins AS " + BARE.format("pub")))
    ok(simple(conn, "EXECUTE ins"))
    assert watched(ldata) == [(3, 2, "pub")]
    ok(simple(conn, "PREPARE bad AS " + BAD.format("pub-bad")))
    rejected(simple(conn, "EXECUTE bad"), "42501", R2.format(w=1, t=3, tw=2))
    assert watched(ldata) == [(3, 2, "pub")]


# ------------------------------------------------------------------ observe mode

def test_observe_mode_passes_everything_untouched(proxy_factory, ldata):
    """Observe never rewrites: no pin either, so after an unseen move the write goes where
    the server's path sends it, exactly as sent."""
    p = proxy_factory({"mode": "observe", "layout_cache_ttl": 0})
    with psycopg.connect(p.dsn(db=ldata.name), autocommit=True) as c:
        ok(simple(c, "SET search_path = other"))
        ok(simple(c, BAD.format("observe-decoy")))
        to_public(c)
        ok(simple(c, BAD.format("observe-moved")))
        ok(simple(c, "SET search_path = empty"))
        rejected(simple(c, BARE.format("observe-nowhere")), "42P01")
    assert rows(ldata, "other.policies") == [(3, 1, "observe-decoy")]
    assert watched(ldata) == [(3, 1, "observe-moved")]


# ------------------------------------------------------------------ the layout cache

def test_a_cached_login_keeps_pinning(proxy_factory, ldata):
    """A second login inside layout_cache_ttl reuses the first one's list: still pinned."""
    p = proxy_factory({"mode": "enforce", "layout_cache_ttl": 60})
    for tag in ("first", "cached"):
        with psycopg.connect(p.dsn(db=ldata.name), autocommit=True) as c:
            ok(simple(c, "SET search_path = other"))
            to_public(c)
            ok(simple(c, BAD.format(tag)))
    assert "(cached)" in p.log()
    assert rows(ldata, "other.policies") == [(3, 1, "first"), (3, 1, "cached")]
    assert watched(ldata) == []
