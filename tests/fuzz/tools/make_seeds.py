#!/usr/bin/python3
"""make_seeds -- (re)build the committed fuzz seed corpora from real sessions.

Starts a throwaway PostgreSQL 15 (tgtest.PgCluster), puts a recording TCP
forwarder (tgtest.RecordingForwarder) in front of it, runs real clients
through it -- psql, pgbench (simple, extended, prepared), psycopg 3 (SCRAM,
server-side binding, binary parameters, COPY, pipeline), psycopg2 (md5,
client-side interpolation), a cleartext login, a wrong password, a cancel --
and turns the recorded bytes into seeds:

  corpus/session/   both sides as fuzz_session scripts (mode off, observe and
                    enforce; for the last two the login probe's answer is put
                    where the proxy waits for it)
  corpus/startup/   the client side as fuzz_startup scripts, the canned
                    server's authentication set to the one the client used
  corpus/pgframe/   both byte streams after the startup packet
  corpus/rewrite/   every Query / Parse text seen, plus the SQL of the rewrite
                    unit-test cases, under several environments
  corpus/config/    example configs

    /usr/bin/python3 tests/fuzz/tools/make_seeds.py

Seeds are named by content (sha1), so re-running adds what changed.
"""
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(FUZZ))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import tgtest  # noqa: E402

CORPUS = os.path.join(FUZZ, "corpus")
OWNED = ["policies", "policy_versions", "backup_sets", "backup_items", "restore_runs", "backup_schedules",
         "inventory_items", "inventory_links", "entra_groups", "findings", "entra_role_definitions",
         "tenant_permissions"]
MAX_SEED = 48 * 1024


def save(kind, data):
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- recording

def run_clients(pg, fwd):
    port = str(fwd.port)
    env = dict(os.environ, PGSSLMODE="disable", PGHOST="127.0.0.1", PGPORT=port, PGDATABASE="app")

    def psql(user, *args, stdin=None):
        e = dict(env, PGUSER=user, PGPASSWORD=tgtest.PASSWORDS.get(user) or "")
        return subprocess.run(["psql", "-X", "-q", *args], input=stdin, env=e, capture_output=True, text=True)

    psql("trust_user", "-c", "SELECT 1")
    psql("trust_user", "-v", "ON_ERROR_STOP=0", stdin="""
BEGIN;
INSERT INTO workspaces (id, name) VALUES (1, 'w1') ON CONFLICT DO NOTHING;
INSERT INTO tenants (id, workspace_id, name) VALUES (3, 1, 't3') ON CONFLICT DO NOTHING;
INSERT INTO policies (tenant_id, name) VALUES (3, 'p'), (3, 'q') RETURNING id;
UPDATE policies SET name = 'r' WHERE tenant_id = 3;
SAVEPOINT s1;
UPDATE policies SET tenant_id = 4 WHERE id = 1;
ROLLBACK TO s1;
COMMIT;
SET search_path = public, "$user";
PREPARE ins (bigint, text) AS INSERT INTO policies (tenant_id, name) VALUES ($1, $2);
EXECUTE ins (3, 'x');
DEALLOCATE ins;
COPY policies (tenant_id, name) FROM STDIN;
3\tcopied
3\tcopied2
\\.
SELECT * FROM policies ORDER BY id LIMIT 3;
SELECT repeat('x', 100000);
SELECT 1/0;
CREATE TEMP TABLE policies (id int);
DISCARD ALL;
NOTIFY ch, 'payload';
""")
    psql("plain_user", "-c", "SELECT current_user")
    psql("md5_user", "-c", "SELECT current_user")
    psql("app", "-c", "SELECT current_user")
    psql("app", "-c", "SELECT 1", "-v", "x=1")   # fine
    bad = dict(env, PGUSER="app", PGPASSWORD="wrong")
    subprocess.run(["psql", "-X", "-c", "SELECT 1"], env=bad, capture_output=True)

    # pgbench: a tiny custom script in each query mode
    script = os.path.join(pg.base, "seed.sql")
    with open(script, "w") as f:
        f.write("\\set t random(3, 3)\n"
                "INSERT INTO policies (tenant_id, name) VALUES (:t, 'bench');\n"
                "SELECT count(*) FROM policies WHERE tenant_id = :t;\n")
    os.chmod(script, 0o644)
    for mode in ("simple", "extended", "prepared"):
        subprocess.run([os.path.join(tgtest.PG_BIN, "pgbench"), "-n", "-t", "3", "-c", "1", "-M", mode,
                        "-f", script, "-U", "trust_user", "-h", "127.0.0.1", "-p", port, "app"],
                       env=env, capture_output=True)

    import psycopg
    dsn = f"host=127.0.0.1 port={port} dbname=app sslmode=disable"
    with psycopg.connect(dsn + f" user=app password={tgtest.PASSWORDS['app']}") as c:
        c.execute("SELECT %s::int, %s::text, %s::bytea", (1, "two", b"\x00\x01"))
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (3, "psycopg"))
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (3, "prep"), prepare=True)
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (3, "prep"), prepare=True)
        c.execute("SELECT %b::bigint", (7,), binary=True)
        with c.cursor() as cur:
            cur.executemany("INSERT INTO audit_logs (tenant_id, action, status) VALUES (%s, %s, %s)",
                            [(3, "a", "ok"), (None, "b", "ok")])
            with cur.copy("COPY policies (tenant_id, name) FROM STDIN") as cp:
                cp.write_row((3, "copy3"))
            with cur.copy("COPY (SELECT 1, 'a') TO STDOUT") as cp:
                for _ in cp:
                    pass
        with c.pipeline():
            c.execute("SELECT 1")
            c.execute("SELECT set_config('search_path', 'public', false)")
        try:
            c.execute("SELECT %s::int", ("nope",))
        except psycopg.Error:
            c.rollback()
    import psycopg2
    c2 = psycopg2.connect(dsn + f" user=md5_user password={tgtest.PASSWORDS['md5_user']}")
    with c2.cursor() as cur:
        cur.execute("INSERT INTO policies (tenant_id, name, workspace_id) VALUES (%s, %s, %s)", (3, "pg2", 1))
        cur.execute("UPDATE policies SET workspace_id = %s WHERE tenant_id = %s", (1, 3))
        cur.execute("SELECT %s", ("it's",))
    c2.commit()
    c2.close()

    # a cancel: the CancelRequest is its own connection
    import threading
    with psycopg.connect(dsn + " user=trust_user") as c:
        t = threading.Timer(0.5, c.cancel)
        t.start()
        try:
            c.execute("SELECT pg_sleep(3)")
        except psycopg.Error:
            pass
        t.join()
    time.sleep(0.5)


# ---------------------------------------------------------------- conversion

def split_startup(client):
    """Strip the pre-startup packets (SSLRequest etc.) and the startup packet
    off a client byte stream; returns the rest."""
    i = 0
    while len(client) - i >= 8:
        ln, code = struct.unpack("!II", client[i:i + 8])
        i += ln
        if code >> 16 == 3:
            break
    return client[i:]


def messages(stream):
    out, i = [], 0
    while len(stream) - i >= 5:
        t = stream[i:i + 1]
        ln = struct.unpack("!I", stream[i + 1:i + 5])[0]
        out.append((t, stream[i + 5:i + 1 + ln]))
        i += 1 + ln
    return out


def op_write(side, data):
    out = b""
    for k in range(0, len(data), 65535):
        piece = data[k:k + 65535]
        out += bytes([0 if side == "c" else 1]) + struct.pack("!H", len(piece)) + piece
    return out


def wire(t, payload):
    return t + struct.pack("!I", len(payload) + 4) + payload


def probe_answer():
    ver = helpers_version()

    def row(*vals):
        body = struct.pack("!H", len(vals))
        for v in vals:
            body += struct.pack("!I", len(v)) + v
        return wire(b"D", body)
    return (row(b'"$user", public', b"on", ver.encode()) + wire(b"C", b"SELECT 1\0") +
            row(b"public", b"policies", b"id\x1ftenant_id\x1fname\x1fworkspace_id") +
            wire(b"C", b"SELECT 1\0") + wire(b"Z", b"I"))


def helpers_version():
    """policy/helpers_sql.c's version string for the default policy."""
    h = 1469598103934665603
    for part in ("tenantguard", "public", "tenants", "id", "workspace_id"):
        for ch in part.encode():
            h ^= ch
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        h ^= 0xFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"1:{h:016x}"


def session_seed(chunks, variant, with_probe):
    out = bytes([variant])
    probed = not with_probe
    size = 0
    ssl_answer = bool(variant & 0x04)   # the proxy asks the server for TLS first
    for side, data in chunks:
        if side == "s" and ssl_answer:
            data = b"N" + data
            ssl_answer = False
        out += op_write(side, data) + (b"\x03" if side == "c" else b"\x02")
        size += len(data)
        if not probed and side == "s" and b"Z\0\0\0\5" in data:
            out += op_write("s", probe_answer()) + b"\x02"
            probed = True
        if size > MAX_SEED:
            break
    return out


def auth_of(chunks):
    for side, data in chunks:
        if side != "s":
            continue
        for t, p in messages(data):
            if t == b"R":
                code = struct.unpack("!I", p[:4])[0]
                return {0: 0, 3: 1, 5: 2, 10: 3}.get(code, 0)
    return 0


def startup_seed(chunks, variant):
    out = bytes([variant])
    for side, data in chunks:
        if side == "c":
            out += op_write("c", data[:MAX_SEED]) + b"\x02"
    return out


def convert(sessions):
    texts = set()
    for chunks in sessions:
        if not chunks:
            continue
        client = b"".join(d for s, d in chunks if s == "c")
        server = b"".join(d for s, d in chunks if s == "s")
        for variant, probe in ((0x00, False), (0x01, True), (0x02, True), (0x0e, True)):
            save("session", session_seed(chunks, variant, probe))
        auth = auth_of(chunks)
        for extra in (0x00, 0x02, 0x04):
            save("startup", startup_seed(chunks, extra | (auth << 4)))
        fe = split_startup(client)[:MAX_SEED]
        be = server[:MAX_SEED]
        save("pgframe", struct.pack("!H", min(len(fe), 65535)) + fe[:65535] + be)
        for t, p in messages(split_startup(client)):
            if t == b"Q":
                texts.add((0, p.rstrip(b"\0")))
            elif t == b"P":
                parts = p.split(b"\0")
                if len(parts) >= 2:
                    texts.add((1, parts[1]))
    return texts


def rewrite_seeds(texts):
    src = open(os.path.join(REPO, "tests", "unit", "test_rewrite_cases.c"), encoding="utf-8").read()
    for m in re.finditer(r'\.sql = ((?:"(?:[^"\\]|\\.)*"\s*)+),', src):
        lit = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        sql = bytes(lit, "utf-8").decode("unicode_escape").encode("latin-1", "replace")
        texts.add((0, sql))
    for proto, sql in texts:
        if not sql.strip():
            continue
        for env in (0x00, 0x02):
            save("rewrite", bytes([proto | env]) + sql[:MAX_SEED])
    save("rewrite", bytes([0x04]) + b"INSERT INTO policies (tenant_id) VALUES (3)\x1e\"$user\", Public, pg_temp")
    save("rewrite", bytes([0x40 | 0x02]) + b"INSERT INTO policies VALUES (1, 3, 'positional')")


def config_seeds():
    seeds = [
        "[tenantguard]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\nserver_host = 127.0.0.1\nserver_port = 5432\n",
        "[tenantguard]\nmode = enforce\nlog_format = json\nlog_level = debug\nmax_packet_size = 1MB\n"
        "buffer_high_water = 64kB\nclient_idle_timeout = 5min\nshutdown_timeout = 1h\ncache_max_bytes = 0\n",
        "[tenantguard]\nmode = observe\nunix_socket_dir = /tmp\nso_reuseport = yes\n"
        "server_sslmode = verify-full\nserver_tls_ca_file = /etc/ssl/certs/ca.pem\nclient_tls_mode = disable\n",
        "[tenantguard]\nmode = enforce\n[policy]\ntables = policies, app.findings,\n    backup_sets\n"
        "schema = public\ntenant_column = tenant_id\nworkspace_column = workspace_id\n"
        "tenant_table = public.tenants\naudit_table = public.audit_logs\nhelper_schema = tg\n"
        "[table policies]\nmode = observe\ntenant_column = tid\n[table app.findings]\nworkspace_column = ws\n",
        "[policy]\naudit_table =\ntenant_id_column = key\ntenant_workspace_column = ws_id\n",
        "; comment\n# another\n[tenantguard]\nmax_client_conn = 10000 ; trailing\nlisten_backlog=4096\n",
    ]
    keys = subprocess.run([tgtest.BINARY, "config-keys"], capture_output=True, text=True).stdout
    full = ["[tenantguard]"]
    section = "tenantguard"
    for line in keys.splitlines():
        cols = [c.strip() for c in line.split("|")[1:-1]]
        if len(cols) != 6 or cols[0] in ("section", "---") or cols[0].startswith("table"):
            continue
        if cols[0] != section:
            section = cols[0]
            full.append(f"[{section}]")
        val = cols[3].strip("`") if cols[3] != "(empty)" else ""
        full.append(f"{cols[1].strip('`')} = {val}")
    seeds.append("\n".join(full) + "\n")
    for s in seeds:
        save("config", s.encode())


def main():
    if os.path.isdir(CORPUS) and "--clean" in sys.argv:
        shutil.rmtree(CORPUS)
    base = tgtest.make_tempdir("tg-seeds-")
    pg = tgtest.PgCluster(base)
    pg.start()
    try:
        pg.psql_file(os.path.join(REPO, "sql", "demo_schema.sql"), db="app", user="app")
        for t in OWNED:   # phase 1: nullable workspace_id
            pg.psql(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS workspace_id bigint NULL", db="app", user="app")
        fwd = tgtest.RecordingForwarder(pg.port)
        run_clients(pg, fwd)
        time.sleep(0.5)
        fwd.close()
        texts = convert(fwd.sessions)
        rewrite_seeds(texts)
        config_seeds()
    finally:
        pg.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
    for kind in sorted(os.listdir(CORPUS)):
        print(kind, len(os.listdir(os.path.join(CORPUS, kind))))


if __name__ == "__main__":
    main()
