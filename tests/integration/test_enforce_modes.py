"""Modes, reloads and what the proxy logs, through the real proxy.

- observe: the server executes exactly what the client sent (rows stored
  unbound, mismatches stored); the log says what enforce mode would do;
- off: nothing rewritten, nothing logged;
- per-table modes;
- mode switch by reload (SIGHUP): the next statement of an EXISTING session is
  enforced; statements prepared before (Parse with a name, SQL PREPARE) are
  refused at Bind/EXECUTE with 0A000; freshly prepared ones work;
- fail closed: unparseable text naming a watched table is refused, other
  unparseable text gets the server's own 42601;
- helpers missing: enforced writes refused with 0A000 naming the command;
- the violation log: fingerprints, never values.
"""
import os
import re

import psycopg
import pytest

import tgtest
from tgtest import simple, simple_all

R2 = "tenantguard: workspace_id {w} does not match tenant {t} (workspace {tw}) on policies (R2)"
STALE = ('tenantguard: prepared statement "{}" was prepared under another enforcement policy or search_path and '
         'would now be rewritten; prepare it again')
HELPERS = ("tenantguard: enforcement needs tenantguard's SQL helpers in schema tenantguard, which are missing or of "
           "another version; run: tenantguard migrate --phase 1")
UNPARSED = re.compile(r"tenantguard: statement could not be parsed \(at offset \d+\) and may write a watched table; "
                      r"refused in enforce mode")


def policies(db):
    return db.rows("SELECT tenant_id, workspace_id, name FROM policies ORDER BY id")


def ok(out):
    assert out.ok, out
    return out


def connect(proxy, db, **kw):
    return psycopg.connect(proxy.dsn(db=db.name, **kw), autocommit=True)


def tg_lines(proxy):
    """Log lines about enforcement (rejections, refusals, observations)."""
    return [line for line in proxy.log().splitlines()
            if re.search(r"\b(rejected|refused|would|observe[ds]?)\b", line) and "mode observe" not in line
            and "started" not in line]


# ------------------------------------------------------------------ observe / off

OBSERVED = [
    ("INSERT INTO policies (tenant_id, name) VALUES (3, 'derive')", True),
    ("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'mismatch')", True),
    ("INSERT INTO policies (tenant_id, name) VALUES (5, 'no-ws')", True),
    ("UPDATE policies SET tenant_id = 4 WHERE name = 'derive'", True),
    ("UPDATE policies SET workspace_id = 3 WHERE name = 'mismatch'", True),
    ("INSERT INTO audit_logs (tenant_id, workspace_id, action) VALUES (4, 2, 'audit-mismatch')", True),
    ("INSERT INTO policies (name) VALUES ('no tenant column')", False),        # the server's own 23502
]


@pytest.mark.parametrize("mode", ["observe", "off"])
def test_observe_and_off_execute_what_was_sent(proxy_factory, data, mode):
    p = proxy_factory({"mode": mode})
    with connect(p, data) as c, data.direct() as d:
        for sql, good in OBSERVED:
            via, direct = simple(c, sql), simple(d, sql)
            assert (via.ok, via.sqlstate, via.message) == (direct.ok, direct.sqlstate, direct.message), sql
            assert via.ok == good, (sql, via)
        # COPY FROM works as sent
        with c.cursor().copy("COPY policies (tenant_id, name) FROM STDIN") as cp:
            cp.write_row((6, "copied"))
    # every row twice (via the proxy, then directly), exactly as sent
    got = policies(data)
    assert got == [(4, None, "derive"), (4, None, "derive"), (3, 3, "mismatch"), (3, 3, "mismatch"),
                   (5, None, "no-ws"), (5, None, "no-ws"), (6, None, "copied")]
    assert data.rows("SELECT tenant_id, workspace_id FROM audit_logs") == [(4, 2), (4, 2)]
    if mode == "off":
        assert tg_lines(p) == []
        # the login probe runs in off mode too: a reload may turn enforcement on


def test_observe_logs_refusals(proxy_factory, data):
    p = proxy_factory({"mode": "observe"})
    with connect(p, data) as c:
        assert simple(c, "INSERT INTO policies (name) VALUES ('x')").sqlstate == "23502"
        assert simple(c, "INSERT INTO policies VALUES (").sqlstate == "42601"
        assert simple(c, "MERGE INTO policies p USING (VALUES (1)) s(id) ON p.id = s.id WHEN MATCHED THEN "
                         "DELETE RETURNING *").sqlstate == "42601"
    p.wait_log("would refuse (observe): 42501 R3 on public.policies (statement ")
    lines = tg_lines(p)
    assert sum("would refuse (observe): 0A000 form on public.policies (statement unparsed)" in x
               for x in lines) == 2, lines


def test_observe_logs_would_be_rewrites(proxy_factory, data):
    p = proxy_factory({"mode": "observe"})
    with connect(p, data) as c:
        ok(simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'derive')"))
        ok(simple(c, "UPDATE policies SET tenant_id = 4 WHERE name = 'derive'"))
    tgtest.wait_until(lambda: any(re.search(r"observe.*R1.*public\.policies", x) for x in tg_lines(p)), 3,
                      what="an observe-mode line for the R1 rewrite")
    assert any(re.search(r"observe.*R4.*public\.policies", x) for x in tg_lines(p))


def test_per_table_modes(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"}, "[table policies]\nmode = observe\n[table findings]\nmode = off\n")
    with connect(p, data) as c:
        ok(simple(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'observed')"))
        ok(simple(c, "INSERT INTO findings (tenant_id, workspace_id, title) VALUES (3, 1, 'off')"))
        out = simple(c, "INSERT INTO backup_sets (tenant_id, workspace_id, name) VALUES (3, 1, 'enforced')")
        assert (out.sqlstate, out.message) == ("42501", R2.format(w=1, t=3, tw=2).replace("policies", "backup_sets"))
        ok(simple(c, "INSERT INTO backup_sets (tenant_id, name) VALUES (3, 'derived')"))
        # one statement writing an observed and an enforced table: the enforced one is checked
        out = simple(c, "WITH a AS (INSERT INTO policies (tenant_id, name) VALUES (4, 'cte-observed') RETURNING 1) "
                        "INSERT INTO backup_sets (tenant_id, workspace_id, name) VALUES (4, 2, 'cte-bad')")
        assert out.sqlstate == "42501", out
    assert policies(data) == [(3, 1, "observed")]
    assert data.rows("SELECT tenant_id, workspace_id, title FROM findings") == [(3, 1, "off")]
    assert data.rows("SELECT tenant_id, workspace_id, name FROM backup_sets") == [(3, 2, "derived")]


# ------------------------------------------------------------------ reload

INS = "INSERT INTO policies (tenant_id, name) VALUES ($1, $2)"


def test_reload_observe_to_enforce(proxy_factory, data):
    p = proxy_factory({"mode": "observe"})
    c = connect(p, data)
    try:
        pgc = c.pgconn
        ok(tgtest.Outcome(pgc.prepare(b"st", INS.encode())))
        ok(tgtest.Outcome(pgc.prepare(b"sel", b"SELECT count(*) FROM policies WHERE tenant_id = $1")))
        ok(simple(c, "PREPARE pp (bigint) AS INSERT INTO policies (tenant_id, name) VALUES ($1, 'pp')"))
        ok(simple(c, "PREPARE ro AS SELECT 1"))
        ok(tgtest.Outcome(pgc.exec_prepared(b"st", [b"3", b"observed"])))
        ok(simple(c, "EXECUTE pp (4)"))
        cur = c.cursor()
        cur.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (6, "psycopg-prepared"), prepare=True)
        assert policies(data) == [(3, None, "observed"), (4, None, "pp"), (6, None, "psycopg-prepared")]

        p.reload({"mode": "enforce"})
        assert "reload failed" not in p.log()
        # the next statement of this existing session is enforced
        out = simple(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'x')")
        assert (out.sqlstate, out.message) == ("42501", R2.format(w=1, t=3, tw=2))
        ok(simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'derived-after-reload')"))
        # statements prepared before: refused at EXECUTE (Bind: test_reload_stale_bind)
        out = simple(c, "EXECUTE pp (4)")
        assert (out.sqlstate, out.message) == ("0A000", STALE.format("pp")), out
        # ... in a transaction the refusal aborts it like any error
        ok(simple(c, "BEGIN"))
        assert simple(c, "EXECUTE pp (4)").sqlstate == "0A000"
        assert simple(c, "SELECT 1").sqlstate == "25P02"
        ok(simple(c, "ROLLBACK"))
        # those that write nothing watched still run
        assert ok(tgtest.Outcome(pgc.exec_prepared(b"sel", [b"3"]))).rows[0][0] == "2"
        assert ok(simple(c, "EXECUTE ro")).rows == [["1"]]
        # prepared again: enforced
        ok(tgtest.Outcome(pgc.prepare(b"st2", INS.encode())))
        ok(tgtest.Outcome(pgc.exec_prepared(b"st2", [b"4", b"fresh-parse"])))
        ok(simple(c, "DEALLOCATE pp"))
        ok(simple(c, "PREPARE pp (bigint) AS INSERT INTO policies (tenant_id, name) VALUES ($1, 'pp-again')"))
        ok(simple(c, "EXECUTE pp (6)"))
    finally:
        c.close()
    assert policies(data)[3:] == [(3, 2, "derived-after-reload"), (4, 1, "fresh-parse"), (6, 3, "pp-again")]
    assert "refused: 0A000 stale_prepared on - (statement unparsed)" in p.log()
    # a new session is enforced too
    with connect(p, data) as c2:
        assert simple(c2, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'x')").sqlstate == "42501"


@pytest.mark.parametrize("client", ["wire", "libpq", "psycopg-prepare"])
def test_reload_stale_bind(proxy_factory, data, client):
    p = proxy_factory({"mode": "observe"})
    if client == "wire":
        with p.wire(timeout=5) as w:
            w.login(database=data.name)
            w.send(w.parse_msg(INS, "st") + w.SYNC)
            assert [m[0] for m in w.read_until("Z")] == ["1", "Z"]
            p.reload({"mode": "enforce"})
            w.send(w.bind_msg(["3", "stale"], stmt="st") + w.execute_msg() + w.SYNC)
            msgs = w.read_until("Z")          # times out: no ReadyForQuery
            assert [(e["C"], e["M"]) for e in tgtest.errors_of(msgs)] == [("0A000", STALE.format("st"))]
            w.send(w.parse_msg(INS, "st2") + w.bind_msg(["4", "fresh"], stmt="st2") + w.execute_msg() + w.SYNC)
            assert not tgtest.errors_of(w.read_until("Z"))
    else:
        with psycopg.connect(p.dsn(db=data.name), autocommit=True) as c:
            import socket
            import threading
            # libpq would wait for ever: after 5 s cut the connection under it
            sock = socket.socket(fileno=os.dup(c.pgconn.socket))
            timer = threading.Timer(5, lambda: sock.shutdown(socket.SHUT_RDWR))
            if client == "libpq":
                ok(tgtest.Outcome(c.pgconn.prepare(b"st", INS.encode())))
                p.reload({"mode": "enforce"})
                timer.start()
                out = tgtest.Outcome(c.pgconn.exec_prepared(b"st", [b"3", b"stale"]))
            else:
                c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (6, "before"), prepare=True)
                p.reload({"mode": "enforce"})
                timer.start()
                try:
                    c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (6, "stale"), prepare=True)
                    out = None
                except psycopg.Error as e:
                    out = e
            timer.cancel()
            sock.close()
            if client == "libpq":
                assert (out.sqlstate, out.message) == ("0A000", STALE.format("st")), out
            else:
                assert isinstance(out, psycopg.errors.FeatureNotSupported), out
    # the stale statement stored nothing; what was prepared afresh (wire) did
    assert [r[2] for r in policies(data)] in ([], ["before"], ["fresh"])


def test_reload_enforce_to_observe_and_back(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        pgc = c.pgconn
        ok(tgtest.Outcome(pgc.prepare(b"st", INS.encode())))       # rewritten: carries its checks
        p.reload({"mode": "observe"})
        ok(simple(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'observed')"))
        ok(tgtest.Outcome(pgc.exec_prepared(b"st", [b"4", b"rewritten-before"])))
        p.reload({"mode": "enforce"})
        assert simple(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'x')").sqlstate == "42501"
        ok(tgtest.Outcome(pgc.exec_prepared(b"st", [b"6", b"still-fine"])))
    assert policies(data) == [(3, 1, "observed"), (4, 1, "rewritten-before"), (6, 3, "still-fine")]


def test_reload_per_table_mode(proxy_factory, data):
    p = proxy_factory({"mode": "observe"})
    with connect(p, data) as c:
        ok(simple(c, "INSERT INTO findings (tenant_id, workspace_id, title) VALUES (3, 1, 'observed')"))
        p.reload(extra_sections="[table findings]\nmode = enforce\n")
        assert simple(c, "INSERT INTO findings (tenant_id, workspace_id, title) VALUES (3, 1, 'x')").sqlstate == "42501"
        ok(simple(c, "INSERT INTO findings (tenant_id, title) VALUES (4, 'derived')"))
        ok(simple(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, 'still observed')"))
    assert data.rows("SELECT tenant_id, workspace_id, title FROM findings ORDER BY id") == [
        (3, 1, "observed"), (4, 1, "derived")]


def test_reload_off_to_enforce(proxy_factory, data):
    p = proxy_factory({"mode": "off"})
    with connect(p, data) as c:
        ok(simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'off')"))
        p.reload({"mode": "enforce"})
        out = simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'enforced')")
        assert out.ok, out
    assert policies(data) == [(3, None, "off"), (3, 2, "enforced")]


# ------------------------------------------------------------------ fail closed

@pytest.mark.parametrize("sql", [
    "MERGE INTO policies p USING (VALUES (1)) s(id) ON p.id = s.id WHEN MATCHED THEN DELETE RETURNING *",  # PG 17
    "INSERT INTO policies VALUES (",
    'INSERT INTO U&"\\0070olicies" (tenant_id) VALUES (3) RETURNING',
    "INSERT INTO public.policies (tenant_id, name) VALUES (3, 'x') ON CONFLICT DO SOMETHING",
    "SELECT 1; INSERT INTO policies (tenant_id, name) VALUE (3, 'x')",
])
def test_unparseable_naming_a_watched_table_refused(eproxy, data, sql):
    with connect(eproxy, data) as c:
        out = simple(c, sql)
        assert out.sqlstate == "0A000" and UNPARSED.fullmatch(out.message), out
        assert simple(c, "SELECT 1").ok
    assert policies(data) == []


@pytest.mark.parametrize("sql,msg", [
    ("SELEC 1", 'syntax error at or near "SELEC"'),
    ("INSERT INTO workspaces VALUES (", "syntax error at end of input"),
    ("UPDATE tenants SET workspace_id = WHERE id = 3", 'syntax error at or near "WHERE"'),
])
def test_unparseable_elsewhere_gets_the_servers_error(eproxy, data, sql, msg):
    with connect(eproxy, data) as c, data.direct() as d:
        out, direct = simple(c, sql), simple(d, sql)
        assert (out.sqlstate, out.message) == (direct.sqlstate, direct.message) == ("42601", msg)


# ------------------------------------------------------------------ helpers missing

@pytest.fixture(scope="module")
def bare(pg):
    """A phase-1 database without tenantguard's helper functions."""
    db = tgtest.EnforceDb(pg, "tg_enforce_nohelpers", helpers=False)
    db.reset()
    return db


def test_helpers_missing(eproxy, bare):
    with connect(eproxy, bare) as c:
        for sql in ["INSERT INTO policies (tenant_id, name) VALUES (3, 'x')",
                    "UPDATE policies SET tenant_id = 4",
                    "INSERT INTO audit_logs (tenant_id, action) VALUES (3, 'x')"]:
            out = simple(c, sql)
            assert (out.sqlstate, out.message) == ("0A000", HELPERS), (sql, out)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
            c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (3, "ext"))
        assert ei.value.diag.message_primary == HELPERS
        # reads, unwatched writes and writes that need no check work
        assert ok(simple(c, "SELECT count(*) FROM policies")).rows == [["0"]]
        ok(simple(c, "INSERT INTO workspaces (id, name) VALUES (9, 'w9')"))
        ok(simple(c, "UPDATE policies SET name = 'n'"))
        ok(simple(c, "DELETE FROM policies"))
        ok(simple(c, "INSERT INTO audit_logs (action) VALUES ('platform')"))
    assert bare.rows("SELECT count(*) FROM policies") == [(0,)]
    assert bare.rows("SELECT tenant_id, workspace_id, action FROM audit_logs") == [(None, None, "platform")]
    # installed while the proxy runs: new sessions use them
    bare.install_helpers()
    with connect(eproxy, bare) as c:
        ok(simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'with helpers')"))
    assert bare.rows("SELECT tenant_id, workspace_id FROM policies") == [(3, 2)]


def test_helpers_of_another_version(eproxy, pg):
    db = tgtest.EnforceDb(pg, "tg_enforce_oldhelpers")
    db.reset()
    db.execute("CREATE OR REPLACE FUNCTION tenantguard.helpers_version() RETURNS text LANGUAGE sql IMMUTABLE "
               "AS $$ SELECT '0:0000000000000000'::text $$")
    with connect(eproxy, db) as c:
        out = simple(c, "INSERT INTO policies (tenant_id, name) VALUES (3, 'x')")
        assert (out.sqlstate, out.message) == ("0A000", HELPERS)
    assert db.rows("SELECT count(*) FROM policies") == [(0,)]


# ------------------------------------------------------------------ the violation log

SECRET = "Zq-SECRET-literal-4242"


def test_violation_log_has_fingerprints_never_values(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        out = simple(c, f"INSERT INTO policies (tenant_id, workspace_id, name) VALUES (3, 1, '{SECRET}-a')")
        assert out.sqlstate == "42501"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (%s, %s, %s)",
                      (3, 987654321, SECRET + "-b"), prepare=True)
        out = simple(c, f"INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 3, '{SECRET}-a2')")
        assert out.sqlstate == "42501"
        assert simple(c, f"INSERT INTO policies (name) VALUES ('{SECRET}-c')").sqlstate == "42501"
        assert simple(c, f"UPDATE policies SET tenant_id = 4 WHERE name = '{SECRET}-d'").ok   # no row: no violation
        assert simple(c, f"COPY policies (name) FROM STDIN WITH (DELIMITER '{SECRET[0]}')").sqlstate == "0A000"
        assert simple(c, f"INSERT INTO policies VALUES ('{SECRET}-e'").sqlstate == "0A000"
    p.wait_log("refused: 0A000 form on public.policies (statement unparsed)")
    log = p.log()
    lines = tg_lines(p)
    fp = r"[0-9a-f]{16}"
    assert sum(bool(re.search(rf"rejected: 42501 R2 on public\.policies \(statement {fp}\)$", x)) for x in lines) == 3, \
        lines
    assert any(re.search(rf"refused: 42501 R3 on public\.policies \(statement {fp}\)$", x) for x in lines), lines
    assert any(re.search(rf"refused: 0A000 form on public\.policies \(statement {fp}\)$", x) for x in lines), lines
    # the two simple-Query R2 rejections differ only in values: one fingerprint
    fps = re.findall(rf"rejected: 42501 R2 on public\.policies \(statement ({fp})\)", log)
    assert fps[0] == fps[2]
    assert SECRET not in log and "987654321" not in log and tgtest.PASSWORDS["app"] not in log


def test_violation_log_fingerprint_of_unnamed_statement(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        out = tgtest.extended(c, "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)",
                              [3, 1, SECRET])
        assert out.sqlstate == "42501"
    p.wait_log("rejected: 42501 R2 on public.policies")
    assert re.search(r"rejected: 42501 R2 on public\.policies \(statement [0-9a-f]{16}\)", p.log()), tg_lines(p)


RELOAD_TABLES = "[policy]\ntables = findings, policies\n"


def test_reload_changing_the_watched_tables(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        p.reload(extra_sections=RELOAD_TABLES)
        out = simple(c, "INSERT INTO findings (title) VALUES ('x')")
        assert (out.sqlstate, out.message) == ("42501", "tenantguard: INSERT into findings does not set tenant_id: "
                                                        "no tenant to derive the workspace from (R3)")
        ok(simple(c, "INSERT INTO findings (tenant_id, title) VALUES (3, 'derived')"))
        ok(simple(c, "INSERT INTO backup_sets (tenant_id, workspace_id, name) VALUES (3, 1, 'no longer watched')"))
    assert data.rows("SELECT tenant_id, workspace_id, title FROM findings") == [(3, 2, "derived")]
    assert data.rows("SELECT tenant_id, workspace_id FROM backup_sets") == [(3, 1)]


def test_reload_changing_the_watched_tables_positional(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        p.reload(extra_sections=RELOAD_TABLES)
        out = simple(c, "INSERT INTO findings VALUES (DEFAULT, 3, 'low', 'positional')")
        assert out.ok, out
    assert data.rows("SELECT tenant_id, workspace_id, title FROM findings") == [(3, 2, "positional")]


def test_reload_changing_the_watched_tables_log_label(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    with connect(p, data) as c:
        p.reload(extra_sections=RELOAD_TABLES)
        assert simple(c, "INSERT INTO findings (title) VALUES ('x')").sqlstate == "42501"
    p.wait_log("refused: 42501 R3 on ")
    assert "refused: 42501 R3 on public.findings" in p.log()


# PostgreSQL keys prepared statements and portals by the first NAMEDATALEN - 1
# (63) bytes of their names: a Bind naming a long variant of a statement runs
# that statement. The proxy must see the same statement, also for names longer
# than it reads ahead.
@pytest.mark.parametrize("suffix", ["x", "y" * 200])
def test_stale_bind_under_a_longer_name(proxy_factory, data, suffix):
    p = proxy_factory({"mode": "observe"})
    short = "s" * 63
    with p.wire(timeout=5) as w:
        w.login(database=data.name)
        w.send(w.parse_msg(INS, short) + w.SYNC)
        assert [m[0] for m in w.read_until("Z")] == ["1", "Z"]
        p.reload({"mode": "enforce"})
        w.send(w.bind_msg(["3", "stale"], portal="p" * 70, stmt=short + suffix) + w.execute_msg("p" * 70) + w.SYNC)
        msgs = w.read_until("Z")
        assert [(e["C"], e["M"]) for e in tgtest.errors_of(msgs)] == [("0A000", STALE.format(short))]
    assert policies(data) == []


def test_long_names_enforced_and_closed(proxy_factory, data):
    p = proxy_factory({"mode": "enforce"})
    name = "n" * 63
    with p.wire(timeout=5) as w:
        w.login(database=data.name)
        # prepared under a long name, run under another long name with the same 63 bytes
        w.send(w.parse_msg(INS, name + "a" * 300) + w.SYNC)
        assert [m[0] for m in w.read_until("Z")] == ["1", "Z"]
        w.send(w.bind_msg(["3", "long"], portal="q" * 300, stmt=name + "b" * 5) + w.execute_msg("q" * 64) +
               w.SYNC)
        assert not tgtest.errors_of(w.read_until("Z"))
        # closed under a third variant: a new Parse of the 63 bytes is not stale, and is enforced
        w.send(w.close_msg("S", name + "c" * 200) + w.SYNC)
        assert [m[0] for m in w.read_until("Z")] == ["3", "Z"]
        w.send(w.parse_msg("INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3)", name) +
               w.bind_msg(["4", "2", "mismatch"], stmt=name) + w.execute_msg() + w.SYNC)
        assert [e["C"] for e in tgtest.errors_of(w.read_until("Z"))] == ["42501"]
    assert [(r[0], r[2]) for r in policies(data)] == [(3, "long")]
    assert data.rows("SELECT count(*) FROM policies WHERE workspace_id IS NULL") == [(0,)]


# SQL PREPARE and protocol-level Parse name statements in one namespace: a Bind
# runs what PREPARE made, EXECUTE what Parse made, DEALLOCATE drops either.
def test_stale_across_prepare_and_bind(proxy_factory, data):
    p = proxy_factory({"mode": "observe"})
    with p.wire(timeout=5) as w:
        w.login(database=data.name)
        w.send(w.query_msg("PREPARE sqlst (bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2)"))
        assert not tgtest.errors_of(w.read_until("Z"))
        w.send(w.parse_msg(INS, "wirest") + w.SYNC)
        assert [m[0] for m in w.read_until("Z")] == ["1", "Z"]
        p.reload({"mode": "enforce"})
        w.send(w.bind_msg(["3", "stale-bind"], stmt="sqlst") + w.execute_msg() + w.SYNC)
        assert [(e["C"], e["M"]) for e in tgtest.errors_of(w.read_until("Z"))] == [("0A000", STALE.format("sqlst"))]
        w.send(w.query_msg("EXECUTE wirest (3, 'stale-execute')"))
        assert [(e["C"], e["M"]) for e in tgtest.errors_of(w.read_until("Z"))] == [("0A000",
                                                                                   STALE.format("wirest"))]
        # DEALLOCATE drops the protocol-level one: prepared again, it is fresh and enforced
        w.send(w.query_msg("DEALLOCATE wirest"))
        assert not tgtest.errors_of(w.read_until("Z"))
        w.send(w.parse_msg(INS, "wirest") + w.bind_msg(["3", "fresh"], stmt="wirest") + w.execute_msg() + w.SYNC)
        assert not tgtest.errors_of(w.read_until("Z"))
    assert [(r[0], r[2]) for r in policies(data)] == [(3, "fresh")]
    assert data.rows("SELECT count(*) FROM policies WHERE workspace_id IS NULL") == [(0,)]
