"""Helpers shared by the admin console tests (no tests here).

The console is reached two ways, and every command is checked through both:
real psql (--csv, parsed) and psycopg 3's pgconn (simple Query through
PQexec: psycopg's own execute() would use the extended protocol, which the
console refuses).
"""
import csv
import io
import os
import subprocess
import urllib.error
import urllib.request

import tgtest

ADMIN_USER = "ops"
ADMIN_PASSWORD = "console-Secret-55"

# PostgreSQL type OIDs of the console's columns
BOOL, INT8, TEXT, FLOAT8, TIMESTAMPTZ = 16, 20, 25, 701, 1184


def passwd_line(name, password):
    """`tenantguard passwd NAME` with the password on standard input."""
    r = subprocess.run([tgtest.BINARY, "passwd", name], input=password + "\n", capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def write_auth_file(workdir, users=None):
    users = users or {ADMIN_USER: ADMIN_PASSWORD}
    path = os.path.join(workdir, "admin_users.txt")
    with open(path, "w") as f:
        for name, pw in users.items():
            f.write(passwd_line(name, pw))
    return path


def console_settings(workdir, **extra):
    s = {"admin_port": tgtest.free_port(), "admin_auth_file": write_auth_file(workdir)}
    s.update(extra)
    return s


def console_proxy(proxy_factory, workdir, settings=None, extra_sections="", start=True):
    """A tenantguard with its console on a free port; .admin_port is set."""
    s = console_settings(workdir)
    s.update(settings or {})
    p = proxy_factory(s, extra_sections, start=False)
    p.admin_port = s["admin_port"]
    if start:
        p.start()
        tgtest.wait_until(lambda: tgtest.port_open(p.admin_port), 10, what="the console port")
    return p


def console_dsn(proxy, user=ADMIN_USER, password=ADMIN_PASSWORD, db="tenantguard"):
    return (f"host=127.0.0.1 port={proxy.admin_port} user={user} dbname={db} sslmode=disable "
            f"password={password}")


# ---------------------------------------------------------------- psql

class PsqlResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        rows = list(csv.reader(io.StringIO(proc.stdout))) if proc.stdout.strip() else []
        self.columns = rows[0] if rows else []
        self.rows = rows[1:]

    def dicts(self):
        return [dict(zip(self.columns, r)) for r in self.rows]


def psql(proxy, sql, user=ADMIN_USER, password=ADMIN_PASSWORD, check=True, timeout=60):
    """One console command through psql --csv; the parsed result."""
    r = subprocess.run(["psql", "-X", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql,
                        console_dsn(proxy, user, password)], capture_output=True, text=True,
                       timeout=timeout)
    res = PsqlResult(r)
    if check:
        assert r.returncode == 0, f"psql {sql!r} failed: {r.stderr}"
    return res


# ---------------------------------------------------------------- psycopg

class Result:
    """One PGresult of a simple Query: columns (name, type oid), rows as str."""

    def __init__(self, res):
        from psycopg import pq
        f = pq.DiagnosticField
        self.ok = res.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
        self.sqlstate = (res.error_field(f.SQLSTATE) or b"").decode() or None
        self.message = (res.error_field(f.MESSAGE_PRIMARY) or b"").decode()
        self.hint = (res.error_field(f.MESSAGE_HINT) or b"").decode()
        self.columns = [(res.fname(i).decode(), res.ftype(i)) for i in range(res.nfields)]
        self.rows = [[None if res.get_value(r, c) is None else res.get_value(r, c).decode()
                      for c in range(res.nfields)] for r in range(res.ntuples)]
        self.tag = (res.command_status or b"").decode()

    @property
    def names(self):
        return [c[0] for c in self.columns]

    def dicts(self):
        return [dict(zip(self.names, r)) for r in self.rows]

    def __repr__(self):
        return f"Result(ok={self.ok}, sqlstate={self.sqlstate}, message={self.message!r}, rows={self.rows})"


def connect(proxy, user=ADMIN_USER, password=ADMIN_PASSWORD):
    import psycopg
    conn = psycopg.connect(console_dsn(proxy, user, password), autocommit=True)
    conn.notices = []
    conn.add_notice_handler(lambda d: conn.notices.append(d.message_primary))
    return conn


def q(conn, sql):
    """A console command as a simple Query (PQexec through psycopg's pgconn)."""
    return Result(conn.pgconn.exec_(sql.encode()))


def ok(conn, sql):
    r = q(conn, sql)
    assert r.ok, f"{sql}: {r}"
    return r


# ---------------------------------------------------------------- metrics

def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def http_status(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def parse_metrics(text):
    """Prometheus text format into {(name, frozenset(labels)): value}; every
    sample line must parse and every family must have # TYPE before it."""
    import re
    samples, types = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+0-9.eE]+|\+Inf|NaN)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels = m.group(1), m.group(3) or ""
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no # TYPE"
        lab = frozenset(label_re.findall(labels))
        samples[(name, lab)] = float(m.group(4))
    return samples


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))
