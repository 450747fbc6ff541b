"""Extended-protocol transparency of rewritten statements, byte for byte.

A raw protocol client (tgtest.PgWire) sends the same Parse / Describe / Bind
messages to tenantguard (enforce mode) and straight to PostgreSQL; the
ParameterDescription, RowDescription / NoData and the statement's results must
be the same bytes, with the client's parameter type OIDs kept. rwtool confirms
that each statement is one the proxy rewrites.
"""
import struct

import pytest

import tgtest

CASES = [
    ("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", ()),
    ("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", (20, 25)),
    ("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", (21, 0)),
    ("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", (23, 1043)),
    ("INSERT INTO policies (tenant_id, name) VALUES ($1, $2), ($3, $4) RETURNING *", ()),
    ("INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING id, workspace_id", ()),
    ("INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING id, workspace_id", (21, 21, 0)),
    ("INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2::int, $3)", (0, 0, 25)),
    ("INSERT INTO policies (tenant_id, name) SELECT $1, $2 RETURNING tenant_id, workspace_id", (20, 25)),
    ("INSERT INTO policies (tenant_id, name, settings) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
     "SET workspace_id = EXCLUDED.workspace_id, tenant_id = $1 RETURNING *", ()),
    ("UPDATE policies SET tenant_id = $1, workspace_id = $2, name = $3 WHERE id = $4 RETURNING *", ()),
    ("UPDATE policies SET (tenant_id, workspace_id) = ($1, $2) WHERE id = $3", (700, 20, 20)),
    ("UPDATE policies p SET workspace_id = t.workspace_id FROM tenants t WHERE t.id = p.tenant_id AND t.id = $1", ()),
    ("INSERT INTO audit_logs (tenant_id, workspace_id, action, context) VALUES ($1, $2, $3, $4) RETURNING context",
     ()),
    ("MERGE INTO policies p USING (SELECT $1::bigint AS id) s ON p.id = s.id WHEN MATCHED THEN UPDATE "
     "SET workspace_id = $2 WHEN NOT MATCHED THEN INSERT (tenant_id, name) VALUES ($3, $4)", ()),
    ("WITH x AS (INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING *) SELECT id, workspace_id, "
     "$3::text AS tag FROM x", ()),
    ("EXPLAIN ANALYZE INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", ()),
]


@pytest.fixture
def wires(eproxy, data):
    via = eproxy.wire()
    via.login(user="app", database=data.name)
    direct = tgtest.PgWire(data.pg.port)
    direct.login(user="app", database=data.name)
    yield via, direct
    via.close()
    direct.close()


def describe(w, sql, types):
    w.send(w.parse_msg(sql, "s1", types) + w.describe_msg("S", "s1") + w.SYNC)
    msgs = w.read_until("Z")
    assert not tgtest.errors_of(msgs), (sql, tgtest.errors_of(msgs))
    w.send(w.close_msg("S", "s1") + w.SYNC)
    w.read_until("Z")
    return [(t, p) for t, p in msgs if t in "tTn"]


@pytest.mark.parametrize("sql,types", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_describe_statement_is_byte_identical(wires, sql, types):
    d = tgtest.rwtool(sql, "--extended", "--path", '"$user",public')
    assert d["action"] == "replace", d
    via, direct = wires
    got, want = describe(via, sql, types), describe(direct, sql, types)
    assert got == want
    # the client's own OIDs come back as sent
    assert want[0][0] == "t"
    n = struct.unpack("!H", want[0][1][:2])[0]
    oids = struct.unpack(f"!{n}I", want[0][1][2:])
    for i, t in enumerate(types):
        if t:
            assert oids[i] == t


def test_describe_portal_and_results_identical(wires, data):
    """Bind + Describe portal + Execute inside a transaction that is rolled back:
    same RowDescription and same rows (the derived workspace) both ways."""
    sql = "INSERT INTO policies (id, tenant_id, name) VALUES ($1, $2, $3) RETURNING id, tenant_id, workspace_id, name"
    out = []
    for w in wires:
        w.query("BEGIN")
        w.send(w.parse_msg(sql, "", (20, 20, 25)) +
               w.bind_msg(["7", "3", "p"], result_formats=(1,)) +
               w.describe_msg("P") + w.execute_msg() + w.SYNC)
        msgs = w.read_until("Z")
        w.query("ROLLBACK")
        assert not tgtest.errors_of(msgs), tgtest.errors_of(msgs)
        out.append([(t, p) for t, p in msgs if t in "TDC"])
    # direct: the client's text stores NULL; the proxy's stores 2. Same description, different value.
    via, direct = out
    assert via[0] == direct[0]                  # RowDescription
    assert via[2] == direct[2]                  # CommandComplete INSERT 0 1
    assert tgtest.data_row(via[1][1])[2] == struct.pack("!q", 2)
    assert tgtest.data_row(direct[1][1])[2] is None
    assert data.rows("SELECT count(*) FROM policies") == [(0,)]


def test_binary_parameters_and_results(wires, data):
    """int2/int4/int8 binary parameters for bigint columns, binary results."""
    via, _ = wires
    sql = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING workspace_id"
    for types, t, ws in [((21, 21, 25), struct.pack("!h", 3), struct.pack("!h", 2)),
                         ((23, 23, 25), struct.pack("!i", 4), struct.pack("!i", 1)),
                         ((20, 20, 25), struct.pack("!q", 6), struct.pack("!q", 3))]:
        params = [t, ws, b"bin"]
        bind = b"\0\0" + struct.pack("!HHHH", 3, 1, 1, 0) + struct.pack("!H", 3)
        for p in params:
            bind += struct.pack("!i", len(p)) + p
        bind += struct.pack("!HH", 1, 1)
        via.send(via.parse_msg(sql, "", types) + via.msg("B", bind) + via.execute_msg() + via.SYNC)
        msgs = via.read_until("Z")
        assert not tgtest.errors_of(msgs), tgtest.errors_of(msgs)
        assert tgtest.data_row([p for m, p in msgs if m == "D"][0]) == [struct.pack("!q", {3: 2, 4: 1, 6: 3}[
            struct.unpack("!q", t.rjust(8, b"\0"))[0]])]
    assert data.rows("SELECT tenant_id, workspace_id FROM policies ORDER BY id") == [(3, 2), (4, 1), (6, 3)]


def test_parse_level_rejection_answers_the_parse(wires, data):
    """A statement the proxy rejects itself: the ErrorResponse answers the Parse;
    Bind/Execute after it are skipped until Sync, as after any Parse error."""
    via, _ = wires
    via.send(via.parse_msg("INSERT INTO policies (name) VALUES ($1)", "bad") + via.bind_msg(["x"], stmt="bad") +
             via.execute_msg() + via.SYNC)
    msgs = via.read_until("Z")
    assert [m for m, _ in msgs] == ["E", "Z"]
    e = tgtest.errors_of(msgs)[0]
    assert (e["S"], e["C"]) == ("ERROR", "42501")
    assert e["M"] == ("tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the workspace "
                      "from (R3)")
    # the name was never created
    via.send(via.describe_msg("S", "bad") + via.SYNC)
    assert tgtest.errors_of(via.read_until("Z"))[0]["C"] == "26000"
    assert data.rows("SELECT count(*) FROM policies") == [(0,)]


def test_pipelined_queries_get_their_own_answers(wires, data):
    """Four simple Queries sent back to back: each rejection replaces the right error."""
    via, _ = wires
    qs = ["INSERT INTO policies (name) VALUES ('no tenant')",
          "INSERT INTO policies (tenant_id, name) VALUES (3, 'ok')",
          "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (4, 2, 'bad')",
          "COPY policies FROM STDIN",
          "SELECT 'tenantguard:refused' AS looks_like_a_marker"]
    via.send(b"".join(via.query_msg(q) for q in qs))
    answers = [via.read_until("Z") for _ in qs]
    errs = [[(e["C"], e["M"]) for e in tgtest.errors_of(a)] for a in answers]
    assert errs == [
        [("42501", "tenantguard: INSERT into policies does not set tenant_id: no tenant to derive the workspace "
                   "from (R3)")],
        [],
        [("42501", "tenantguard: workspace_id 2 does not match tenant 4 (workspace 1) on policies (R2)")],
        [("0A000", "tenantguard: COPY ... FROM into policies is refused in enforce mode; use INSERT (or the "
                   "backfill path for bulk loads)")],
        [],
    ]
    assert tgtest.rows_of(answers[4]) == [["tenantguard:refused"]]
    # a client's own statement naming the marker gets the server's error, untouched
    e = tgtest.errors_of(via.query('SELECT "tenantguard:refused"'))[0]
    assert (e["C"], e["M"]) == ("42703", 'column "tenantguard:refused" does not exist')
    assert data.rows("SELECT tenant_id, workspace_id, name FROM policies") == [(3, 2, "ok")]


def test_pipelined_parse_rejections_in_one_sync_group(wires, data):
    via, _ = wires
    via.send(via.parse_msg("INSERT INTO policies (tenant_id, name) VALUES ($1, $2)", "good") +
             via.parse_msg("INSERT INTO policies (name) VALUES ($1)", "bad") +
             via.bind_msg(["3", "never"], stmt="good") + via.execute_msg() + via.SYNC +
             via.bind_msg(["4", "after sync"], stmt="good") + via.execute_msg() + via.SYNC)
    first, second = via.read_until("Z"), via.read_until("Z")
    assert [m for m, _ in first] == ["1", "E", "Z"]
    assert tgtest.errors_of(first)[0]["C"] == "42501"
    assert [m for m, _ in second] == ["2", "C", "Z"]
    assert data.rows("SELECT tenant_id, workspace_id, name FROM policies") == [(4, 1, "after sync")]
