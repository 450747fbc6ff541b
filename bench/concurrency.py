#!/usr/bin/python3
"""bench/concurrency -- many concurrent sessions.

1. --sessions (default 1,000) client sessions through tenantguard in enforce mode,
   each logged in (login probe included) and having run one query, all held open
   (PostgreSQL's max_connections raised to fit): the proxy's RSS and fds idle, with
   every session open, and per session.
2. The scale-out topology for more clients than PostgreSQL has backends:
   app -> PgBouncer (pool_mode = transaction) -> tenantguard -> PostgreSQL, with
   --pooled (default 10,000) client connections held open on PgBouncer while a
   workload runs through it, and the enforcement checks passing through it: R1
   (derived), R2 (mismatch rejected, 42501), R4 (tenant change rejected), an
   accepted row bound to its tenant's workspace. tenantguard sees only PgBouncer's
   server connections (default_pool_size), each 1:1 with a backend.

    bench/concurrency.py [--sessions 1000] [--pooled 10000]
"""
import argparse
import os
import resource
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import tgtest  # noqa: E402
from tgtest import PgWire  # noqa: E402

from test_security_rewrite import phase1_database  # noqa: E402


def hold_sessions(port, n, db, user="trust_user"):
    """n logged-in raw sessions, each having run SELECT 1; returns them."""
    out = []
    for i in range(n):
        w = PgWire(port, timeout=60)
        w.login(user, db)
        w.scalar("SELECT 1")
        out.append(w)
    return out


def part1(pg, wd, n):
    proxy = tgtest.Proxy(pg, wd, {"log_level": "warning", "max_client_conn": n + 100, "mode": "enforce"})
    proxy.start()
    time.sleep(0.5)
    rss0, fd0 = proxy.rss_kb(), proxy.fd_count()
    t0 = time.monotonic()
    held = hold_sessions(proxy.port, n, "conc")
    took = time.monotonic() - t0
    rss1, fd1 = proxy.rss_kb(), proxy.fd_count()
    print(f"[1] {n} sessions through tenantguard (enforce, login probe): opened in {took:.1f}s; "
          f"proxy RSS {rss0} kB idle -> {rss1} kB = {(rss1 - rss0) / n:.1f} kB per session; "
          f"fds {fd0} -> {fd1} ({(fd1 - fd0) / n:.2f} per session)", flush=True)
    for w in held:
        w.send(PgWire.TERMINATE)
        w.close()
    tgtest.wait_until(lambda: proxy.fd_count() == fd0, 60, what="fds back")
    print(f"[1] all closed: RSS {proxy.rss_kb()} kB, fds {proxy.fd_count()}", flush=True)
    proxy.stop()


def enforcement_checks(port, db):
    import psycopg
    dsn = f"host=127.0.0.1 port={port} dbname={db} user=trust_user sslmode=disable"
    res = {}
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as c:
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (3, 'via-bouncer')")
        res["R1 derived"] = c.execute("SELECT workspace_id FROM policies WHERE name = 'via-bouncer'").fetchone()[0] == 1
        for name, sql in (("R2 mismatch", "INSERT INTO policies (tenant_id, name, workspace_id) VALUES (3, 'bad', 2)"),
                          ("R4 tenant change", "UPDATE policies SET tenant_id = 4 WHERE name = 'via-bouncer'")):
            try:
                c.execute(sql)
                res[name + " rejected"] = False
            except psycopg.errors.InsufficientPrivilege:
                res[name + " rejected"] = True
        c.execute("INSERT INTO policies (tenant_id, name) VALUES (%s, %s)", (4, "via-bouncer-param"))
        res["R1 extended protocol"] = c.execute(
            "SELECT workspace_id FROM policies WHERE name = 'via-bouncer-param'").fetchone()[0] == 2
    return res


class BigBouncer(B.PgBouncer):
    """PgBouncer with a descriptor limit that fits its max_client_conn."""

    def start(self):
        argv = ["prlimit", "--nofile=20000:20000", "--", "pgbouncer", self.ini]
        if os.geteuid() == 0:
            os.chmod(self.workdir, 0o777)
            # runuser's PAM session resets the limits: raise them inside it
            argv = ["runuser", "-u", "postgres", "--", "prlimit", "--nofile=20000:20000", "--", "pgbouncer",
                    self.ini]
        self.proc = B.subprocess.Popen(argv, stdout=B.subprocess.DEVNULL, stderr=B.subprocess.DEVNULL)
        tgtest.wait_until(lambda: tgtest.port_open(self.port), 10, what="pgbouncer")
        return self


def part2(pg, wd, n_pooled, pool_size):
    proxy = tgtest.Proxy(pg, wd, {"log_level": "warning", "max_client_conn": 1000, "mode": "enforce"})
    proxy.start()

    class Target:
        port = proxy.port

    bouncer = BigBouncer(Target, wd, pool_mode="transaction", pool_size=pool_size, max_client_conn=n_pooled + 500)
    with open(bouncer.ini, "a") as f:
        f.write("max_db_connections = 0\n")
    bouncer.start()
    t0 = time.monotonic()
    socks = []
    for i in range(n_pooled):
        s = socket.create_connection(("127.0.0.1", bouncer.port), timeout=60)
        s.sendall(PgWire.startup_packet("trust_user", "conc"))
        socks.append(s)
    # every client logged in (PgBouncer answers from its pool's cached parameters)
    for s in socks:
        buf = b""
        while not buf.endswith(b"Z\0\0\0\x05I"):
            d = s.recv(4096)
            if not d:
                raise RuntimeError("a pooled client was refused")
            buf += d
    took = time.monotonic() - t0
    print(f"[2] {n_pooled} clients logged in to PgBouncer (transaction pooling, pool {pool_size}) in {took:.1f}s",
          flush=True)
    # a workload through a sample of them: each runs a watched INSERT as its own transaction
    t0 = time.monotonic()
    ok = 0
    sample = socks[::max(1, n_pooled // 2000)]
    for i, s in enumerate(sample):   # all at once: PgBouncer spreads them over its pool
        s.sendall(PgWire.query_msg(f"INSERT INTO policies (tenant_id, name) VALUES ({3 + i % 2}, 'pooled')"))
    peak_backends = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'conc'")
    for s in sample:
        buf = b""
        while not buf.endswith(b"Z\0\0\0\x05I"):
            buf += s.recv(4096)
        ok += b"INSERT 0 1" in buf
    took = time.monotonic() - t0
    # in a process of its own: this one holds 10,000 sockets, past what select() takes
    r = B.subprocess.run([sys.executable, os.path.abspath(__file__), "--checks", str(bouncer.port)],
                         capture_output=True, text=True, timeout=120)
    checks = r.stdout.strip() or r.stderr.strip()[-500:]
    backends = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'conc'")
    bad = pg.psql("SELECT count(*) FROM policies p JOIN tenants t ON t.id = p.tenant_id "
                  "WHERE p.workspace_id IS DISTINCT FROM t.workspace_id", db="conc")
    print(f"[2] {ok} watched INSERTs sent at once through PgBouncer -> tenantguard in {took:.1f}s "
          f"(backends while they ran: {peak_backends}); "
          f"enforcement through the chain: {checks}; rows not bound to their tenant's workspace: {bad}", flush=True)
    print(f"[2] with {n_pooled} clients open: PostgreSQL backends for the db {backends}, tenantguard RSS "
          f"{proxy.rss_kb()} kB fds {proxy.fd_count()}; PgBouncer RSS {B.rss_kib(bouncer.pid)} kB "
          f"fds {len(os.listdir(f'/proc/{bouncer.pid}/fd'))}", flush=True)
    for s in socks:
        s.close()
    bouncer.stop()
    proxy.stop()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--checks":
        print(enforcement_checks(int(sys.argv[2]), "conc"))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--pooled", type=int, default=10000)
    ap.add_argument("--pool-size", type=int, default=20)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    pg, base = B.start_cluster()
    wd = B.workdir()
    try:
        pg.psql(f"ALTER SYSTEM SET max_connections = {args.sessions + 100}", db="postgres")
        pg.restart_server()
        phase1_database(pg, "conc")
        pg.psql("TRUNCATE policies CASCADE", db="conc")
        if not args.skip_part1:
            part1(pg, wd, args.sessions)
        part2(pg, wd, args.pooled, args.pool_size)
    finally:
        B.cleanup(pg, base)


if __name__ == "__main__":
    main()
