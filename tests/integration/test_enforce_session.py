"""Session state and name resolution through the real proxy.

Unqualified names resolve through the session's search_path, which the proxy
tracks (startup options, ALTER ROLE defaults learnt by the login probe, SET,
SET LOCAL, RESET, set_config(), DISCARD ALL, transactions and savepoints, temp
tables). Decoys -- other.policies, "Policies", a temp policies, the tenants
table itself -- must behave exactly as without the proxy; the watched table
must be enforced whenever the server would write it.

Schema beyond the phase-1 database: schema `other` with its own `policies`
(id, tenant_id, workspace_id, name) -- a decoy, unwatched --, a table
"Policies" in public (quoted look-alike), and schema `attacker` with a lying
`tenants`.
"""
import os

import psycopg
import pytest

import tgtest
from tgtest import simple, simple_all

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
R3_MISSING = "tenantguard: tenant {t} does not exist (R3) on policies"

DECOY_DDL = [
    "CREATE SCHEMA other AUTHORIZATION app",
    "CREATE TABLE other.policies (id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, name text)",
    'CREATE TABLE "Policies" (id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, name text)',
    "CREATE SCHEMA attacker AUTHORIZATION app",
    "CREATE TABLE attacker.tenants (id bigint, workspace_id bigint, name text)",
    "CREATE FUNCTION attacker.eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "CREATE OPERATOR attacker.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = attacker.eq)",
    "CREATE FUNCTION other.to_public() RETURNS text LANGUAGE sql AS $$ SELECT set_config('search_path', 'public', "
    "false) $$",
    "CREATE PROCEDURE other.to_public_p() LANGUAGE sql AS $$ SELECT set_config('search_path', 'public', false) $$",
]


@pytest.fixture(scope="module")
def sdb(edb):
    for s in DECOY_DDL:
        edb.pg.psql(s, db=edb.name, user="app")
    return edb


@pytest.fixture
def sdata(sdb):
    sdb.reset()
    with sdb.direct() as c:
        c.execute('TRUNCATE other.policies, "Policies", attacker.tenants RESTART IDENTITY')
        c.execute("INSERT INTO attacker.tenants VALUES (3, 1, 'lies'), (9, 1, 'invented')")
    return sdb


@pytest.fixture
def conn(eproxy, sdata):
    c = psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True)
    yield c
    c.close()


def _read(db, sql, conn=None):
    """Stored rows; inside an open transaction of conn, what conn itself sees."""
    from psycopg import pq
    if conn is not None and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return [tuple(None if v is None else (int(v) if i < 2 else v) for i, v in enumerate(r))
                for r in simple(conn, sql).rows]
    return db.rows(sql)


def watched(db, conn=None):
    return _read(db, "SELECT tenant_id, workspace_id, name FROM public.policies ORDER BY id", conn)


def decoy(db, table="other.policies", conn=None):
    return _read(db, f"SELECT tenant_id, workspace_id, name FROM {table} ORDER BY id", conn)


def ok(out):
    assert out.ok, out
    return out


def rejected(out, sqlstate="42501", message=None):
    assert out.sqlstate == sqlstate, out
    if message:
        assert out.message == message, out


BAD = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, '{}')"    # R2 on the watched table
BARE = "INSERT INTO policies (tenant_id, name) VALUES (3, '{}')"                    # R1 on the watched table


def enforced(conn, db, tag):
    """An unqualified write lands in public.policies, enforced (R2 rejected, R1 derived)."""
    before = watched(db, conn)
    rejected(simple(conn, BAD.format(tag)), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format(tag)))
    assert watched(db, conn) == before + [(3, 2, tag)]


def passes_to_decoy(conn, db, tag, table="other.policies"):
    """An unqualified write lands in the decoy, exactly as sent (no rewrite)."""
    before_w, before_d = watched(db, conn), decoy(db, table, conn)
    ok(simple(conn, BAD.format(tag)))
    ok(simple(conn, BARE.format(tag)))
    assert decoy(db, table, conn) == before_d + [(3, 1, tag), (3, None, tag)]
    assert watched(db, conn) == before_w


# ------------------------------------------------------------------ names of the watched table

@pytest.mark.parametrize("name", ["policies", "public.policies", '"policies"', "PUBLIC.POLICIES", 'public."policies"',
                                  'U&"\\0070olicies"', 'U&"p!006flicies" UESCAPE \'!\'', "/* c */ public . policies"])
def test_every_spelling_of_the_watched_table_is_enforced(conn, sdata, name):
    rejected(simple(conn, f"INSERT INTO {name} (tenant_id, workspace_id, name) VALUES (3, 1, 'x')"), "42501",
             R2.format(w=1, t=3, tw=2))
    ok(simple(conn, f"INSERT INTO {name} (tenant_id, name) VALUES (4, 'spelled')"))
    assert watched(sdata) == [(4, 1, "spelled")]


# ------------------------------------------------------------------ R7 decoys

def test_decoys_untouched(conn, sdata):
    for sql in ["INSERT INTO other.policies (tenant_id, workspace_id, name) VALUES (3, 1, 'other')",
                "INSERT INTO other.policies (tenant_id, name) VALUES (9, 'other-ghost')",
                'INSERT INTO "Policies" (tenant_id, workspace_id, name) VALUES (3, 1, \'quoted\')',
                "UPDATE other.policies SET tenant_id = 4, workspace_id = 3",
                "INSERT INTO attacker.tenants VALUES (4, 3, 'x')"]:
        ok(simple(conn, sql))
    assert decoy(sdata) == [(4, 3, "other"), (4, 3, "other-ghost")]
    assert decoy(sdata, '"Policies"') == [(3, 1, "quoted")]
    assert watched(sdata) == []


def test_tenants_table_itself_is_transparent(conn, sdata):
    """Moving a tenant to another workspace is allowed; new rows follow it."""
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'before')"))
    out = ok(simple(conn, "UPDATE tenants SET workspace_id = 1 WHERE id = 3 RETURNING id, workspace_id"))
    assert out.rows == [["3", "1"]]
    ok(simple(conn, "INSERT INTO tenants (id, workspace_id, name) VALUES (7, 3, 't7')"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'after'), (7, 'new tenant')"))
    assert watched(sdata) == [(3, 2, "before"), (3, 1, "after"), (7, 3, "new tenant")]


def test_reads_and_errors_equal_direct(eproxy, sdata):
    """Reads of watched tables and server errors on them are what PostgreSQL says directly."""
    sdata.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 2, 'r1'), (4, NULL, 'r2')")
    queries = [
        "SELECT id, tenant_id, workspace_id, name FROM policies ORDER BY id",
        "SELECT p.name, t.name FROM policies p JOIN tenants t ON t.id = p.tenant_id ORDER BY 1",
        "WITH x AS (SELECT * FROM policies) SELECT count(*) FROM x",
        "SELECT * FROM policies WHERE workspace_id IS NULL FOR UPDATE",
        "DELETE FROM policies WHERE name = 'nope' RETURNING id",
        "INSERT INTO policies (tenant_id, name) VALUES (3, NULL)",          # server: 23502
        "INSERT INTO policies (tenant_id, nme) VALUES (3, 'x')",             # server: 42703
        "INSERT INTO policies (tenant_id, name) VALUES ('x', 'y')",          # server: 22P02
        "UPDATE policies SET name = NULL",                                   # server: 23502
    ]
    with psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True) as via, sdata.direct() as direct:
        for q in queries:
            a, b = simple(via, q), simple(direct, q)
            assert (a.ok, a.sqlstate, a.rows) == (b.ok, b.sqlstate, b.rows), q
            if a.sqlstate and a.sqlstate != "22P02":
                assert a.message == b.message, q


def test_delete_is_not_restricted(conn, sdata):
    sdata.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 2, 'd1'), (4, 1, 'd2')")
    assert ok(simple(conn, "DELETE FROM policies WHERE tenant_id = 3")).tag == "DELETE 1"
    assert watched(sdata) == [(4, 1, "d2")]


# ------------------------------------------------------------------ search_path

def test_set_search_path_and_reset(conn, sdata):
    ok(simple(conn, "SET search_path = other"))
    passes_to_decoy(conn, sdata, "set")
    ok(simple(conn, "RESET search_path"))
    enforced(conn, sdata, "reset")
    ok(simple(conn, "SET search_path TO other, pg_catalog"))
    passes_to_decoy(conn, sdata, "set-2")
    ok(simple(conn, "SET search_path TO DEFAULT"))
    enforced(conn, sdata, "default")
    ok(simple(conn, 'SET search_path = "$user", other'))
    passes_to_decoy(conn, sdata, "user-other")
    ok(simple(conn, "SET search_path = other, public"))
    # the watched table is on the path but behind other.policies: the server writes
    # other.policies. Enforcing on the look-alike is allowed; a write to public.policies
    # is not possible here, so the watched table stays as it is.
    simple(conn, BAD.format("behind"))
    assert watched(sdata) == [(3, 2, "reset"), (3, 2, "default")]
    ok(simple(conn, "SET search_path = public, other"))
    enforced(conn, sdata, "public-first")


def test_set_local_and_set_config(conn, sdata):
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "SET LOCAL search_path = other"))
    passes_to_decoy(conn, sdata, "local")
    ok(simple(conn, "COMMIT"))
    enforced(conn, sdata, "after-local")
    assert ok(simple(conn, "SELECT set_config('search_path', 'other', false)")).rows == [["other"]]
    passes_to_decoy(conn, sdata, "set_config")
    ok(simple(conn, "SELECT pg_catalog.set_config('search_path', 'public', false)"))
    enforced(conn, sdata, "set_config-public")
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "SELECT set_config('search_path', 'other', true)"))
    passes_to_decoy(conn, sdata, "set_config-local")
    ok(simple(conn, "COMMIT"))
    enforced(conn, sdata, "after-set_config-local")
    # a set_config the proxy cannot read: the path becomes unknown, writes are enforced
    ok(simple(conn, "SELECT set_config(x, 'other', false) FROM (VALUES ('search_path')) v(x)"))
    rejected(simple(conn, BAD.format("unknown")), "42501")
    assert decoy(sdata)[-1][2] != "unknown"


def test_discard_all(conn, sdata):
    ok(simple(conn, "SET search_path = other"))
    ok(simple(conn, "PREPARE p AS SELECT 1"))
    passes_to_decoy(conn, sdata, "before-discard")
    ok(simple(conn, "DISCARD ALL"))
    enforced(conn, sdata, "after-discard")


@pytest.mark.parametrize("undo", ["ROLLBACK", "error-then-ROLLBACK", "ABORT", "COMMIT-of-failed"])
def test_set_rolled_back_with_its_transaction(conn, sdata, undo):
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "SET search_path = other"))
    passes_to_decoy(conn, sdata, "in-txn")
    if undo == "ROLLBACK":
        ok(simple(conn, "ROLLBACK"))
    elif undo == "ABORT":
        ok(simple(conn, "ABORT"))
    elif undo == "error-then-ROLLBACK":
        rejected(simple(conn, "SELECT 1/0"), "22012")
        ok(simple(conn, "ROLLBACK"))
    else:
        rejected(simple(conn, "SELECT 1/0"), "22012")
        assert ok(simple(conn, "COMMIT")).tag == "ROLLBACK"
    assert ok(simple(conn, "SHOW search_path")).rows == [['"$user", public']]
    enforced(conn, sdata, "after-rollback")
    assert decoy(sdata) == []      # the decoy rows were rolled back too


def test_set_in_a_failed_implicit_transaction(eproxy, conn, sdata):
    """SET in a multi-statement Query (or an extended-protocol Sync group) that fails is undone."""
    res = simple_all(conn, "SET search_path = other; SELECT 1/0")
    assert res[-1].sqlstate == "22012"
    enforced(conn, sdata, "after-implicit")
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        w.send(w.parse_msg("SET search_path = other") + w.bind_msg() + w.execute_msg() +
               w.parse_msg("SELECT 1/0") + w.bind_msg() + w.execute_msg() + w.SYNC)
        assert [e["C"] for e in tgtest.errors_of(w.read_until("Z"))] == ["22012"]
        assert w.scalar("SHOW search_path") == '"$user", public'
        errs = tgtest.errors_of(w.query(BAD.format("wire")))
        assert [(e["C"], e["M"]) for e in errs] == [("42501", R2.format(w=1, t=3, tw=2))]


def test_set_rolled_back_with_a_savepoint(conn, sdata):
    ok(simple(conn, "BEGIN; SAVEPOINT s1"))
    ok(simple(conn, "SET search_path = other"))
    passes_to_decoy(conn, sdata, "in-savepoint")
    ok(simple(conn, "ROLLBACK TO SAVEPOINT s1"))
    # the server is back at public: the write must be enforced
    rejected(simple(conn, BAD.format("after-rollback-to")), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, "ROLLBACK"))
    enforced(conn, sdata, "after-txn")
    # RELEASE keeps it, COMMIT too
    ok(simple(conn, "BEGIN; SAVEPOINT s2; SET search_path = other; RELEASE SAVEPOINT s2; COMMIT"))
    passes_to_decoy(conn, sdata, "released")


def test_extended_protocol_set(eproxy, sdata):
    """psycopg 3 sends a parametrised set_config and SET through Parse/Bind/Execute."""
    with psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True) as c:
        c.execute("SET search_path = other", prepare=True)
        c.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)", (3, 1, "ext-decoy"))
        c.execute("RESET search_path", prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)", (3, 1, "ext"))
        # a parameter the proxy cannot read
        c.execute("SELECT set_config('search_path', %s, false)", ("other",))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)", (3, 1, "unknown"))
    assert decoy(sdata) == [(3, 1, "ext-decoy")]
    assert watched(sdata) == []


def test_temp_table_named_policies(conn, sdata):
    ok(simple(conn, "CREATE TEMP TABLE policies (id serial, tenant_id bigint, workspace_id bigint, name text)"))
    ok(simple(conn, BAD.format("temp")))
    ok(simple(conn, BARE.format("temp")))
    assert ok(simple(conn, "SELECT tenant_id, workspace_id, name FROM pg_temp.policies ORDER BY id")).rows == [
        ["3", "1", "temp"], ["3", None, "temp"]]
    rejected(simple(conn, "INSERT INTO public.policies (tenant_id, workspace_id, name) VALUES (3, 1, 'x')"), "42501",
             R2.format(w=1, t=3, tw=2))
    ok(simple(conn, "DROP TABLE policies"))
    enforced(conn, sdata, "after-drop")
    # with pg_temp after public on the path the watched table wins
    ok(simple(conn, "CREATE TEMP TABLE policies (id serial, tenant_id bigint, workspace_id bigint, name text)"))
    ok(simple(conn, "SET search_path = public, pg_temp"))
    enforced(conn, sdata, "public-before-temp")
    ok(simple(conn, "DISCARD TEMP"))
    ok(simple(conn, "RESET search_path"))
    enforced(conn, sdata, "after-discard-temp")


@pytest.mark.parametrize("how", ["rollback", "on-commit-drop"])
def test_temp_table_gone_with_its_transaction(conn, sdata, how):
    if how == "rollback":
        ok(simple(conn, "BEGIN; CREATE TEMP TABLE policies (tenant_id bigint, workspace_id bigint, name text); ROLLBACK"))
    else:
        ok(simple(conn, "BEGIN; CREATE TEMP TABLE policies (tenant_id bigint, workspace_id bigint, name text) "
                        "ON COMMIT DROP; COMMIT"))
    enforced(conn, sdata, "after-temp-gone")


def test_alter_role_search_path_learnt_at_login(eproxy, sdata):
    pg = sdata.pg
    pg.psql(f"ALTER ROLE app IN DATABASE {sdata.name} SET search_path = other", db="postgres")
    try:
        with psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True) as c:
            passes_to_decoy(c, sdata, "role-default")
            ok(simple(c, "RESET search_path"))          # back to the role's default, not the server's
            passes_to_decoy(c, sdata, "role-reset")
            ok(simple(c, "SET search_path = public"))
            enforced(c, sdata, "role-set-public")
            ok(simple(c, "DISCARD ALL"))
            passes_to_decoy(c, sdata, "role-discard")
    finally:
        pg.psql(f"ALTER ROLE app IN DATABASE {sdata.name} RESET search_path", db="postgres")


def test_startup_options_search_path(eproxy, sdata):
    dsn = eproxy.dsn(db=sdata.name) + " options='-c search_path=other'"
    with psycopg.connect(dsn, autocommit=True) as c:
        assert ok(simple(c, "SHOW search_path")).rows == [["other"]]
        passes_to_decoy(c, sdata, "options")
        ok(simple(c, "SET search_path = public"))
        enforced(c, sdata, "options-set")
        ok(simple(c, "RESET search_path"))
        passes_to_decoy(c, sdata, "options-reset")
    dsn = eproxy.dsn(db=sdata.name) + " options='-c search_path=attacker,public'"
    with psycopg.connect(dsn, autocommit=True) as c:
        enforced(c, sdata, "options-attacker")


def test_set_role_makes_user_unknown(eproxy, sdata):
    """SET ROLE changes what "$user" means: the proxy cannot know, so it enforces."""
    pg = sdata.pg
    pg.psql("DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'other') THEN "
            "CREATE ROLE other NOLOGIN; END IF; END$$", db="postgres")
    pg.psql("GRANT other TO app", db="postgres")
    pg.psql(f"GRANT ALL ON ALL TABLES IN SCHEMA other, public TO other; "
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA other, public TO other; GRANT USAGE ON SCHEMA other, tenantguard "
            f"TO other", db=sdata.name)
    with psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True) as c:
        ok(simple(c, "SET ROLE other"))
        # "$user" is now `other`: the server writes other.policies; the proxy may enforce on it
        out = simple(c, BAD.format("role"))
        assert out.ok or out.sqlstate == "42501"
        ok(simple(c, "RESET ROLE"))
        enforced(c, sdata, "after-role")
    assert watched(sdata) == [(3, 2, "after-role")]


def test_call_makes_the_path_unknown(conn, sdata):
    _other_then(conn)
    ok(simple(conn, "CALL other.to_public_p()"))       # the procedure's set_config outlives the CALL
    rejected(simple(conn, BAD.format("after-call")), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format("after-call")))
    assert watched(sdata) == [(3, 2, "after-call")]


def test_do_makes_the_path_unknown(conn, sdata):
    _other_then(conn)
    ok(simple(conn, "DO $$ BEGIN PERFORM set_config('search_path', 'public', false); END $$"))
    rejected(simple(conn, BAD.format("after-do")), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format("after-do")))
    assert watched(sdata) == [(3, 2, "after-do")]


def test_pg_settings_update_makes_the_path_unknown(conn, sdata):
    """UPDATE pg_settings is set_config() by another name (the view's rule)."""
    _other_then(conn)
    ok(simple(conn, "UPDATE pg_settings SET setting = 'public' WHERE name = 'search_path'"))
    assert conn.execute("SHOW search_path").fetchone()[0] == "public"
    rejected(simple(conn, BAD.format("after-settings")), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format("after-settings")))
    assert watched(sdata) == [(3, 2, "after-settings")]


def test_client_only_encoding_refuses_watched_statements(conn, sdata):
    ok(simple(conn, "SET client_encoding = 'SJIS'"))
    out = simple(conn, BARE.format("sjis"))
    assert out.sqlstate == "0A000" and "client encoding" in out.message, out
    ok(simple(conn, "INSERT INTO workspaces (id, name) VALUES (8, 'w8')"))     # unwatched: as sent
    ok(simple(conn, "RESET client_encoding"))
    enforced(conn, sdata, "utf8-again")


def test_do_changing_the_encoding_holds_what_follows(eproxy, sdata):
    """A DO block may set client_encoding: a statement pipelined behind it
    is read only once the DO has completed, in the encoding it left."""
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        w.send(w.query_msg("DO $$ BEGIN PERFORM set_config('client_encoding', 'SJIS', false); END $$") +
               w.query_msg(BARE.format("pipelined-sjis")))
        msgs = w.read_until("Z") + w.read_until("Z")
        errs = tgtest.errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "0A000" and "client encoding" in errs[0]["M"], errs
        assert w.scalar("SHOW client_encoding") == "SJIS"
    assert watched(sdata) == []


def test_function_changes_the_path(conn, sdata):
    """A function called in an ordinary SELECT changes search_path inside its body, where the
    proxy cannot see. The login showed it that `other` holds a policies of its own, so a write
    the path sends there is pinned to other.policies: it lands in the decoy -- where the path
    the proxy follows says -- and never in the watched table unchecked."""
    _other_then(conn)
    ok(simple(conn, "SELECT other.to_public()"))
    ok(simple(conn, BARE.format("via-function")))
    ok(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'via-function-2')"))
    assert watched(sdata) == []
    assert decoy(sdata) == [(3, None, "via-function"), (3, 1, "via-function-2")]


def test_function_changes_a_path_without_the_name(conn, sdata):
    """Path `attacker` holds no policies: an unqualified write there fails on the server (42P01)
    -- unless an unseen change moved the path, and then it is the watched table's. So it is
    enforced as the watched table's: the same 42P01 while the path is what the proxy
    believes, the rules once a function has moved it."""
    ok(simple(conn, "SET search_path = attacker"))
    assert simple(conn, BARE.format("nowhere")).sqlstate == "42P01"
    ok(simple(conn, "SELECT other.to_public()"))
    rejected(simple(conn, BAD.format("via-function")), "42501", R2.format(w=1, t=3, tw=2))
    ok(simple(conn, BARE.format("via-function")))
    assert watched(sdata) == [(3, 2, "via-function")]


def test_a_lookalike_created_after_login_fails_closed(conn, sdata):
    """The login's view of the catalog ages: a look-alike created later on the path is not
    known, so a write to it is taken for the watched table's -- and refused by the layout
    check rather than passed as sent."""
    with sdata.direct() as d:
        d.execute("CREATE SCHEMA late AUTHORIZATION app")
        d.execute("CREATE TABLE late.policies (id bigserial PRIMARY KEY, note text)")
    try:
        ok(simple(conn, "SET search_path = late"))
        out = simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'late')")
        assert not out.ok, out
        assert watched(sdata) == []
    finally:
        with sdata.direct() as d:
            d.execute("DROP SCHEMA late CASCADE")


def test_a_lookalike_in_a_schema_without_usage_is_not_on_the_path(proxy_factory, sdata):
    """The server's name lookup skips a schema the user may not use: a look-alike there is
    not on the path, and the write is the watched table's -- enforced, not pinned to a
    relation the server would refuse."""
    with sdata.direct(user="postgres") as d:
        d.execute("CREATE SCHEMA hidden")
        d.execute("CREATE TABLE hidden.policies (id bigserial PRIMARY KEY, tenant_id bigint, name text)")
    try:
        p = proxy_factory({"mode": "enforce", "layout_cache_ttl": 0})   # its login sees `hidden`
        with psycopg.connect(p.dsn(db=sdata.name), autocommit=True) as c:
            ok(simple(c, "SET search_path = hidden, public"))
            rejected(simple(c, BAD.format("hidden-bad")), "42501", R2.format(w=1, t=3, tw=2))
            ok(simple(c, BARE.format("hidden")))
        assert watched(sdata) == [(3, 2, "hidden")]
    finally:
        with sdata.direct(user="postgres") as d:
            d.execute("DROP SCHEMA hidden CASCADE")


MANY = 257   # one more relation named like a watched table than a login keeps (PROBE_MAX_RELS)


def test_more_lookalikes_than_a_login_keeps_fail_closed(proxy_factory, sdata):
    """With more look-alikes than a login keeps, none is pinned and a name is the watched
    table's wherever the path finds no watched table: a path changed inside a function
    still cannot send a write there unchecked."""
    with sdata.direct() as d:
        d.execute("DO $$ BEGIN FOR i IN 1..%d LOOP EXECUTE format('CREATE SCHEMA many%%s AUTHORIZATION app; "
                  "CREATE VIEW many%%s.policies AS SELECT 1 AS x', i, i); END LOOP; END $$" % MANY)
    p = proxy_factory({"mode": "enforce", "layout_cache_ttl": 0})
    try:
        with psycopg.connect(p.dsn(db=sdata.name), autocommit=True) as c:
            _other_then(c)
            ok(simple(c, "SELECT other.to_public()"))
            rejected(simple(c, BAD.format("via-function")), "42501", R2.format(w=1, t=3, tw=2))
            ok(simple(c, BARE.format("via-function")))
        assert watched(sdata) == [(3, 2, "via-function")]
    finally:
        with sdata.direct() as d:
            d.execute("DO $$ BEGIN FOR i IN 1..%d LOOP EXECUTE format('DROP SCHEMA many%%s CASCADE', i); "
                      "END LOOP; END $$" % MANY)


def test_a_function_writing_the_watched_table_phase3_backstop(conn, sdata):
    """A write inside a function body is beyond the proxy's sight: phase 3's NOT NULL check
    (added by `migrate --phase 3`, here by hand) refuses the row that arrives unbound, and
    nothing is stored."""
    with sdata.direct() as d:
        d.execute("CREATE FUNCTION other.write_policy() RETURNS void LANGUAGE sql AS "
                  "$$ INSERT INTO public.policies (tenant_id, name) VALUES (3, 'via-function') $$")
        d.execute("ALTER TABLE public.policies ADD CONSTRAINT policies_workspace_id_not_null "
                  "CHECK (workspace_id IS NOT NULL) NOT VALID")
    try:
        out = simple(conn, "SELECT other.write_policy()")
        assert out.sqlstate == "23514" and "policies_workspace_id_not_null" in out.message, out
        assert watched(sdata) == []
    finally:
        with sdata.direct() as d:
            d.execute("ALTER TABLE public.policies DROP CONSTRAINT policies_workspace_id_not_null")
            d.execute("DROP FUNCTION other.write_policy()")


def test_ddl_on_a_lookalike_is_pinned_too(conn, sdata):
    """ALTER TABLE on the name the path gives a look-alike acts on the look-alike even after
    an unseen path change -- it never renames or retypes the watched table."""
    _other_then(conn)
    ok(simple(conn, "SELECT other.to_public()"))
    ok(simple(conn, "ALTER TABLE policies RENAME TO escaped"))
    try:
        with sdata.direct() as d:
            names = [r[0] for r in d.execute("SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                                             "ON n.oid = c.relnamespace WHERE c.relname IN ('policies', 'escaped') "
                                             "AND c.relkind = 'r' ORDER BY 1").fetchall()]
        assert names == ["other.escaped", "public.policies"]
    finally:
        with sdata.direct() as d:
            d.execute("ALTER TABLE IF EXISTS other.escaped RENAME TO policies")


def test_a_role_operator_cannot_blind_the_login_probe(proxy_factory, sdata):
    """The probe runs under the client's search_path: an `=` on type name of the role's own,
    ahead of pg_catalog, must neither fail it nor change what it finds."""
    with sdata.direct() as d:
        d.execute("CREATE FUNCTION attacker.boom(name, name) RETURNS boolean LANGUAGE plpgsql AS "
                  "$$ BEGIN RAISE EXCEPTION 'boom'; END $$")
        d.execute("CREATE OPERATOR attacker.= (LEFTARG = name, RIGHTARG = name, FUNCTION = attacker.boom)")
    p = proxy_factory({"mode": "enforce", "layout_cache_ttl": 0})
    try:
        with psycopg.connect(p.dsn(db=sdata.name), autocommit=True,
                             options="-c search_path=attacker,pg_catalog,public") as c:
            _other_then(c)
            ok(simple(c, "SELECT other.to_public()"))
            ok(simple(c, BAD.format("hijack")))          # pinned: it is the decoy's
        assert watched(sdata) == []
        assert decoy(sdata) == [(3, 1, "hijack")]
        assert "login probe failed" not in p.log()
    finally:
        with sdata.direct() as d:
            d.execute("DROP OPERATOR attacker.= (name, name)")
            d.execute("DROP FUNCTION attacker.boom(name, name)")


def test_a_pinned_prepared_statement_is_decided_again_on_a_new_path(conn, sdata):
    """A statement prepared while the path pinned it to other.policies is not run against
    other.policies once the path has changed: PostgreSQL would look the name up again, so
    the proxy decides it again -- and refuses it, to be prepared anew."""
    _other_then(conn)
    conn.execute(BARE.format("%s").replace("'%s'", "%s"), ("prepared-1",), prepare=True)
    conn.execute(BARE.format("%s").replace("'%s'", "%s"), ("prepared-2",), prepare=True)
    ok(simple(conn, "SET search_path = public"))
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        conn.execute(BARE.format("%s").replace("'%s'", "%s"), ("prepared-3",), prepare=True)
    assert "prepared under another enforcement policy or search_path" in e.value.diag.message_primary
    assert decoy(sdata) == [(3, None, "prepared-1"), (3, None, "prepared-2")]
    assert watched(sdata) == []


# ------------------------------------------------- second review (7977859's report)

def test_explain_with_analyze_named_twice_is_checked(conn, sdata):
    """PostgreSQL takes the last of EXPLAIN (ANALYZE false, ANALYZE true): the statement runs."""
    out = simple(conn, "EXPLAIN (ANALYZE false, ANALYZE true) " + BAD.format("explained"))
    rejected(out, "42501", R2.format(w=1, t=3, tw=2))
    assert watched(sdata) == []


def test_alter_index_cannot_rename_the_watched_table(conn, sdata):
    """ALTER INDEX ... RENAME renames a table too; renaming the watched one is refused."""
    out = simple(conn, "ALTER INDEX public.policies RENAME TO pol2")
    assert out.sqlstate == "0A000" and "renaming the watched table" in out.message, out
    out = simple(conn, "ALTER INDEX policies RENAME TO pol2")
    assert out.sqlstate == "0A000", out


def test_set_then_execute_in_one_query(conn, sdata):
    """A statement prepared while the path pinned it to other.policies, executed after a SET in
    the same text: the proxy cannot vouch for the new path yet, so it is refused, never run
    against other.policies where PostgreSQL would use public.policies."""
    _other_then(conn)
    ok(simple(conn, "PREPARE pin AS " + BAD.format("prepared")))
    out = simple(conn, "SET search_path = public; EXECUTE pin")
    assert out.sqlstate == "0A000" and "prepare it again" in out.message, out
    assert decoy(sdata) == [] and watched(sdata) == []
    ok(simple(conn, "DEALLOCATE pin"))


def test_user_schema_after_a_role_change(proxy_factory, sdata):
    """"$user" is the current role's schema: after SET ROLE the proxy does not know it, so a
    path naming "$user" is unknown -- the write is enforced, never pinned to the login
    user's look-alike (app.policies) where PostgreSQL would write public.policies."""
    with sdata.direct(user="postgres") as d:
        d.execute("CREATE SCHEMA app AUTHORIZATION app")
        d.execute("SET ROLE app")
        d.execute("CREATE TABLE app.policies (id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, "
                  "name text)")
        d.execute("RESET ROLE")
        d.execute("DROP ROLE IF EXISTS tg_other_role")
        d.execute("CREATE ROLE tg_other_role")
        d.execute("GRANT tg_other_role TO app")
        d.execute("GRANT USAGE ON SCHEMA public, tenantguard TO tg_other_role")
        d.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO tg_other_role")
        d.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO tg_other_role")
        d.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tenantguard TO tg_other_role")
    p = proxy_factory({"mode": "enforce", "layout_cache_ttl": 0})   # its logins list app.policies
    try:
        with psycopg.connect(p.dsn(db=sdata.name), autocommit=True) as c:
            ok(simple(c, "SET search_path = \"$user\", public"))
            ok(simple(c, BAD.format("as-app")))          # "$user" is app: the look-alike's, pinned
            ok(simple(c, "SET ROLE tg_other_role"))
            ok(simple(c, "SET search_path = \"$user\", public"))
            rejected(simple(c, BAD.format("as-role")), "42501", R2.format(w=1, t=3, tw=2))
            ok(simple(c, "RESET ROLE"))
        with sdata.direct(user="postgres") as d:
            assert d.execute("SELECT tenant_id, workspace_id, name FROM app.policies").fetchall() == \
                [(3, 1, "as-app")]
        assert watched(sdata) == []
    finally:
        with sdata.direct(user="postgres") as d:
            d.execute("DROP SCHEMA app CASCADE")
            d.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM tg_other_role")
            d.execute("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM tg_other_role")
            d.execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenantguard FROM tg_other_role")
            d.execute("REVOKE ALL ON SCHEMA public, tenantguard FROM tg_other_role")
            d.execute("DROP ROLE tg_other_role")


def test_a_temp_view_shadows_like_a_temp_table(conn, sdata):
    """CREATE TEMP VIEW policies shadows the watched table (pg_temp is searched first): a
    write through it reaches the view's table, as on PostgreSQL, not a look-alike."""
    with sdata.direct() as d:
        d.execute("CREATE TABLE public.scratch (id bigserial PRIMARY KEY, tenant_id bigint, workspace_id bigint, "
                  "name text)")
    try:
        ok(simple(conn, "CREATE TEMP VIEW policies AS SELECT * FROM public.scratch"))
        _other_then(conn)
        ok(simple(conn, BAD.format("through-view")))
        with sdata.direct() as d:
            assert d.execute("SELECT tenant_id, workspace_id, name FROM public.scratch").fetchall() == \
                [(3, 1, "through-view")]
        assert decoy(sdata) == [] and watched(sdata) == []
    finally:
        ok(simple(conn, "DROP VIEW pg_temp.policies"))
        with sdata.direct() as d:
            d.execute("DROP TABLE public.scratch")


def test_fastpath_function_call_changes_the_path(eproxy, sdata):
    import struct
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert not tgtest.errors_of(w.query("SET search_path = other"))
        oid = int(w.scalar("SELECT 'pg_catalog.set_config(text,text,boolean)'::regprocedure::oid"))
        args = [b"search_path", b"public", b"f"]
        body = struct.pack("!IHH", oid, 0, len(args))
        for a in args:
            body += struct.pack("!i", len(a)) + a
        w.send(w.msg("F", body + struct.pack("!H", 0)))
        assert [m for m, _ in w.read_until("Z")] == ["V", "Z"]
        assert w.scalar("SHOW search_path") == "public"
        w.query(BARE.format("fastpath"))
    assert (3, None, "fastpath") not in watched(sdata)


def test_std_strings_pipelined(eproxy, sdata):
    text = "SELECT '\\' ; INSERT INTO policies (tenant_id, name) VALUES (3, chr(120)) ; SELECT 1 -- '"
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert not tgtest.errors_of(w.query("SET standard_conforming_strings = off"))
        w.send(w.query_msg("SET standard_conforming_strings = on") + w.query_msg(text))
        w.read_until("Z")
        w.read_until("Z")
    assert (3, None, "x") not in watched(sdata)


# ------------------------------------------------------------------ same-transaction tenants, attackers

def test_tenant_created_and_moved_in_the_same_transaction(conn, sdata):
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "INSERT INTO workspaces (id, name) VALUES (7, 'w7')"))
    ok(simple(conn, "INSERT INTO tenants (id, workspace_id, name) VALUES (70, 7, 'fresh')"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (70, 'fresh')"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (70, 7, 'explicit')"))
    ok(simple(conn, "UPDATE tenants SET workspace_id = 2 WHERE id = 70"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (70, 'moved')"))
    ok(simple(conn, "UPDATE tenants SET workspace_id = 1 WHERE id = 4"))     # an existing tenant moved
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (4, 'moved-existing')"))
    ok(simple(conn, "COMMIT"))
    assert watched(sdata) == [(70, 7, "fresh"), (70, 7, "explicit"), (70, 2, "moved"), (4, 1, "moved-existing")]
    ok(simple(conn, "BEGIN"))
    ok(simple(conn, "INSERT INTO tenants (id, workspace_id, name) VALUES (71, 3, 'later')"))
    rejected(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (71, 7, 'x')"), "42501",
             R2.format(w=7, t=71, tw=3))
    ok(simple(conn, "ROLLBACK"))
    # the tenant went with its transaction
    rejected(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (71, 'gone')"), "42501",
             R3_MISSING.format(t=71))


def test_tenant_created_in_the_same_multi_statement_query(conn, sdata):
    ok(simple(conn, "INSERT INTO tenants (id, workspace_id, name) VALUES (72, 3, 'same-query'); "
                    "INSERT INTO policies (tenant_id, name) VALUES (72, 'same-query')"))
    assert watched(sdata) == [(72, 3, "same-query")]


def test_tenant_of_another_session_uncommitted_is_not_seen(eproxy, sdata):
    with sdata.direct() as other:
        other.execute("BEGIN")
        other.execute("INSERT INTO tenants (id, workspace_id, name) VALUES (73, 1, 'uncommitted')")
        with psycopg.connect(eproxy.dsn(db=sdata.name), autocommit=True) as c:
            rejected(simple(c, "INSERT INTO policies (tenant_id, name) VALUES (73, 'x')"), "42501",
                     R3_MISSING.format(t=73))
        other.execute("ROLLBACK")


@pytest.mark.parametrize("path", ["attacker, public", "attacker, pg_catalog, public", "pg_temp, attacker, public"])
def test_fake_tenants_and_operators_change_nothing(conn, sdata, path):
    ok(simple(conn, "CREATE TEMP TABLE tenants (id bigint, workspace_id bigint)"))
    ok(simple(conn, "INSERT INTO tenants VALUES (3, 1), (9, 1), (5, 1)"))
    ok(simple(conn, f"SET search_path = {path}"))
    ok(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (3, 'true-ws')"))
    rejected(simple(conn, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'lie')"), "42501",
             R2.format(w=1, t=3, tw=2))
    rejected(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (9, 'invented')"), "42501",
             R3_MISSING.format(t=9))
    rejected(simple(conn, "INSERT INTO policies (tenant_id, name) VALUES (5, 'no-ws')"), "42501",
             "tenantguard: tenant 5 has no workspace (R3) on policies")
    rejected(simple(conn, "UPDATE policies SET tenant_id = 4 WHERE name = 'true-ws'"), "42501",
             "tenantguard: tenant_id of policies cannot change from 3 to 4 (R4)")
    rejected(simple(conn, "UPDATE policies SET workspace_id = 1 WHERE name = 'true-ws'"), "42501")
    assert watched(sdata) == [(3, 2, "true-ws")]


# ------------------------------------------------------------------ BUGs: the proxy's view of search_path goes stale

def _other_then(conn):
    ok(simple(conn, "SET search_path = other"))


def test_set_then_write_in_one_query(conn, sdata):
    _other_then(conn)
    simple(conn, "SET search_path = public; " + BARE.format("one-query"))
    assert (3, None, "one-query") not in watched(sdata)


def test_set_pipelined_simple_queries(eproxy, sdata):
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert not tgtest.errors_of(w.query("SET search_path = other"))
        w.send(w.query_msg("SET search_path = public") + w.query_msg(BARE.format("pipelined")))
        w.read_until("Z")
        w.read_until("Z")
    assert (3, None, "pipelined") not in watched(sdata)


def test_set_pipelined_extended(eproxy, sdata):
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert not tgtest.errors_of(w.query("SET search_path = other"))
        w.send(w.parse_msg("SET search_path = public") + w.bind_msg() + w.execute_msg() +
               w.parse_msg("INSERT INTO policies (tenant_id, name) VALUES ($1, 'pipelined-ext')") +
               w.bind_msg(["3"]) + w.execute_msg() + w.SYNC)
        w.read_until("Z")
    assert (3, None, "pipelined-ext") not in watched(sdata)


@pytest.mark.parametrize("sql,params", [("SET search_path = public", []),
                                        ("SELECT set_config('search_path', 'public', false), $1::int", [1])])
def test_set_through_the_extended_protocol(conn, sdata, sql, params):
    _other_then(conn)
    ok(tgtest.extended(conn, sql, params))
    assert ok(simple(conn, "SHOW search_path")).rows == [["public"]]
    simple(conn, BARE.format("ext-set"))
    assert (3, None, "ext-set") not in watched(sdata)


@pytest.mark.parametrize("how", ["sql-prepare", "protocol-parse"])
def test_prepared_under_another_search_path(conn, sdata, how):
    _other_then(conn)
    if how == "sql-prepare":
        ok(simple(conn, "PREPARE pp AS INSERT INTO policies (tenant_id, name) VALUES ($1, 'prepared-under-other')"))
    else:
        ok(tgtest.Outcome(conn.pgconn.prepare(b"pp", b"INSERT INTO policies (tenant_id, name) "
                                                     b"VALUES ($1, 'prepared-under-other')")))
    ok(simple(conn, "SET search_path = public"))
    if how == "sql-prepare":
        simple(conn, "EXECUTE pp(3)")
    else:
        tgtest.Outcome(conn.pgconn.exec_prepared(b"pp", [b"3"]))
    assert (3, None, "prepared-under-other") not in watched(sdata)


@pytest.mark.parametrize("how", ["rollback-and-chain", "commit-and-chain"])
def test_and_chain(conn, sdata, how):
    if how == "rollback-and-chain":
        ok(simple(conn, "BEGIN"))
        ok(simple(conn, "SET search_path = other"))
        ok(simple(conn, "ROLLBACK AND CHAIN"))          # the server is back at public
    else:
        _other_then(conn)
        ok(simple(conn, "BEGIN"))
        ok(simple(conn, "SET search_path = public"))
        ok(simple(conn, "COMMIT AND CHAIN"))            # public is committed
        ok(simple(conn, "ROLLBACK"))
    assert ok(simple(conn, "SHOW search_path")).rows[0][0] in ('"$user", public', "public")
    simple(conn, BARE.format("chain"))
    simple(conn, "COMMIT")
    assert (3, None, "chain") not in watched(sdata)


def test_commit_inside_a_failing_query(conn, sdata):
    _other_then(conn)
    res = simple_all(conn, "SET search_path = public; COMMIT; SELECT 1/0")
    assert res[-1].sqlstate == "22012"
    assert ok(simple(conn, "SHOW search_path")).rows == [["public"]]
    simple(conn, BARE.format("commit-inside"))
    assert (3, None, "commit-inside") not in watched(sdata)


# ------------------------------------------------------------------ named statements the server keeps

def _prepare_to_public(w, name):
    """Prepare `name` as SET search_path = public (not executed yet)."""
    w.send(w.parse_msg("SET search_path = public", name=name) + w.SYNC)
    assert tgtest.errors_of(w.read_until("Z")) == []


def _server_at_public_and_enforced(w, tag):
    """The server's search_path is public, and the proxy knows it: an R2
    write through the wire is refused."""
    assert w.scalar("SHOW search_path") == "public"
    errs = tgtest.errors_of(w.query(BAD.format(tag)))
    assert [(e["C"], e["M"]) for e in errs] == [("42501", R2.format(w=1, t=3, tw=2))]


def _run(w, name):
    w.send(w.bind_msg(stmt=name) + w.execute_msg() + w.SYNC)
    return tgtest.errors_of(w.read_until("Z"))


def test_failed_reparse_keeps_the_statement_the_server_kept(eproxy, sdata):
    """A Parse of a name that exists fails (42P05, or a syntax error first):
    the server keeps the old statement, so its effects must still apply
    when it runs -- else the proxy's path goes stale and a write to the
    watched table passes as a write to the decoy."""
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert tgtest.errors_of(w.query("SET search_path = other")) == []
        _prepare_to_public(w, "s1")
        for bad in ("SELECT 1", "SELEC garbage"):
            w.send(w.parse_msg(bad, name="s1") + w.SYNC)
            assert [e["C"] for e in tgtest.errors_of(w.read_until("Z"))] == \
                ["42P05" if bad == "SELECT 1" else "42601"]
        assert _run(w, "s1") == []
        _server_at_public_and_enforced(w, "reparse")
    assert watched(sdata) == [] and decoy(sdata) == []


def test_close_and_parse_of_one_name_pipelined(eproxy, sdata):
    """Close 'S' s1 then Parse s1 in one pipeline: the CloseComplete that
    comes back is about the old statement, not the new one."""
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert tgtest.errors_of(w.query("SET search_path = other")) == []
        w.send(w.parse_msg("SELECT 1", name="s1") + w.SYNC)
        assert tgtest.errors_of(w.read_until("Z")) == []
        w.send(w.close_msg("S", "s1") + w.parse_msg("SET search_path = public", name="s1") + w.SYNC)
        assert tgtest.errors_of(w.read_until("Z")) == []
        assert _run(w, "s1") == []
        _server_at_public_and_enforced(w, "close-parse")
    assert watched(sdata) == [] and decoy(sdata) == []


def test_portal_runs_the_statement_it_was_bound_to(eproxy, sdata):
    """The server runs a portal's plan as bound, even when its statement is
    closed and re-parsed before the Execute."""
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert tgtest.errors_of(w.query("SET search_path = other")) == []
        w.send(w.parse_msg("SELECT set_config('search_path', 'public', false)", name="s1") +
               w.bind_msg(portal="p1", stmt="s1") + w.close_msg("S", "s1") + w.parse_msg("SELECT 1", name="s1") +
               w.execute_msg(portal="p1") + w.SYNC)
        assert tgtest.errors_of(w.read_until("Z")) == []
        _server_at_public_and_enforced(w, "bound")
    assert watched(sdata) == [] and decoy(sdata) == []


def test_sql_prepare_changes_the_path_only_when_executed(conn, sdata):
    """PREPARE of a set_config() changes nothing; each EXECUTE of it does."""
    ok(simple(conn, "PREPARE to_other AS SELECT set_config('search_path', 'other', false)"))
    assert ok(simple(conn, "SHOW search_path")).rows == [['"$user", public']]
    enforced(conn, sdata, "after-prepare")
    ok(simple(conn, "EXECUTE to_other"))
    passes_to_decoy(conn, sdata, "after-execute")
    ok(simple(conn, "RESET search_path"))
    enforced(conn, sdata, "after-reset")
    # in one text, the statements after an EXECUTE are decided with the path
    # unknown (so as the watched table); the failed text undoes the EXECUTE
    rejected(simple_all(conn, "EXECUTE to_other; " + BAD.format("same-text"))[-1], "42501",
             R2.format(w=1, t=3, tw=2))
    assert ok(simple(conn, "SHOW search_path")).rows == [['"$user", public']]
    enforced(conn, sdata, "after-same-text")
    ok(simple(conn, "DEALLOCATE to_other"))


def test_suspended_portal_has_run_its_effects(eproxy, sdata):
    """An Execute with a row limit stops with PortalSuspended, not
    CommandComplete -- but the rows it returned have run: a set_config in
    them has changed the search_path already."""
    with eproxy.wire() as w:
        w.login(database=sdata.name)
        assert tgtest.errors_of(w.query("SET search_path = other")) == []
        w.send(w.parse_msg("SELECT set_config('search_path', 'public', false)") + w.bind_msg() +
               w.execute_msg(max_rows=1) + w.SYNC)
        assert tgtest.errors_of(w.read_until("Z")) == []
        _server_at_public_and_enforced(w, "suspended")
    assert watched(sdata) == [] and decoy(sdata) == []


def test_cursor_that_changes_the_path_is_refused(eproxy, conn, sdata):
    """A cursor's query runs at each FETCH, which the proxy does not follow:
    one that calls set_config() is refused while enforcing (it would change
    the search_path behind the proxy's back); ordinary cursors work."""
    ok(simple(conn, "BEGIN"))
    rejected(simple(conn, "DECLARE c CURSOR FOR SELECT set_config('search_path', 'other', false)"), "0A000",
             "tenantguard: a cursor whose query changes session settings (set_config) is not supported while "
             "a table is enforced: its effects happen at each FETCH")
    ok(simple(conn, "ROLLBACK"))
    enforced(conn, sdata, "after-cursor")
    with psycopg.connect(eproxy.dsn(db=sdata.name)) as c:   # psycopg's server-side cursor: DECLARE + FETCH
        with c.cursor(name="srv") as cur:
            cur.execute("SELECT g FROM generate_series(1, 3) g")
            assert [r[0] for r in cur.fetchmany(2)] == [1, 2]
