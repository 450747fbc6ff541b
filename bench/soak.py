#!/usr/bin/python3
"""bench/soak -- mixed traffic through tenantguard (enforce mode) for --minutes
(default 30), sampling the proxy's RSS and fd count every 10 s.

  - pgbench, --clients connections, -M prepared and -M simple halves, weighted
    scripts: reads (SELECT by tenant), watched INSERTs (R1, workspace derived),
    watched UPDATEs of other columns;
  - a Python client that sends rejected writes all along (R2 workspace mismatch as
    a simple Query and with parameters, R4 tenant change, R3 unknown tenant) and
    counts every one that was NOT rejected with 42501;
  - short sessions (connect, one INSERT, close) every 100 ms.

At the end: 0 crashes, every rejected write rejected, no rejected row stored, and
every stored row bound to its tenant's workspace (checked directly). The series
of samples is printed for the report.

    bench/soak.py [--minutes 30] [--clients 8]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import tgtest  # noqa: E402

from test_security_rewrite import phase1_database  # noqa: E402

READ = "\\set t random(3, 6)\nSELECT count(*) FROM policies WHERE tenant_id = :t;\n"
INSERT = "\\set t random(3, 6)\nINSERT INTO policies (tenant_id, name) VALUES (:t, 'soak');\n"
UPDATE = ("\\set t random(3, 6)\n"
          "UPDATE policies SET name = 'soak-upd' WHERE id = (SELECT max(id) FROM policies WHERE tenant_id = :t);\n")
REJECTED = [
    ("INSERT INTO policies (tenant_id, name, workspace_id) VALUES (3, 'rejected', 2)", None),
    ("INSERT INTO policies (tenant_id, name, workspace_id) VALUES (%s, %s, %s)", (4, "rejected", 1)),
    ("UPDATE policies SET tenant_id = 4 WHERE tenant_id = 3 AND id = (SELECT min(id) FROM policies "
     "WHERE tenant_id = 3)", None),
    ("INSERT INTO policies (tenant_id, name) VALUES (999, 'rejected')", None),
]


def rejecter(proxy, stop, stats):
    import psycopg
    while not stop.is_set():
        try:
            with psycopg.connect(proxy.dsn(user="trust_user", db="soak"), autocommit=True) as c:
                while not stop.is_set():
                    for sql, params in REJECTED:
                        stats["attempts"] += 1
                        try:
                            c.execute(sql, params)
                            stats["not_rejected"] += 1
                        except psycopg.errors.InsufficientPrivilege:
                            stats["rejected"] += 1
                    stop.wait(0.02)
        except psycopg.OperationalError as e:
            stats["conn_errors"].append(str(e)[:120])
            stop.wait(1)


def short_sessions(proxy, stop, stats):
    import psycopg
    while not stop.is_set():
        try:
            with psycopg.connect(proxy.dsn(user="trust_user", db="soak"), autocommit=True) as c:
                c.execute("INSERT INTO policies (tenant_id, name) VALUES (5, 'short')")
            stats["short"] += 1
        except psycopg.Error as e:
            stats["short_errors"].append(str(e)[:120])
        stop.wait(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    pg, base = B.start_cluster()
    wd = B.workdir()
    try:
        phase1_database(pg, "soak")
        pg.psql("INSERT INTO workspaces (id, name) VALUES (3, 'w3');"
                "INSERT INTO tenants (id, workspace_id, name) VALUES (5, 3, 't5'), (6, 1, 't6')", db="soak")
        pg.psql("INSERT INTO policies (tenant_id, name, workspace_id) VALUES (3, 'seed', 1), (4, 'seed', 2), "
                "(5, 'seed', 3), (6, 'seed', 1)", db="soak")
        proxy = tgtest.Proxy(pg, wd, {"log_level": "warning", "mode": "enforce"})
        proxy.start()
        files = {}
        for name, text in (("read", READ), ("insert", INSERT), ("update", UPDATE)):
            files[name] = os.path.join(wd, f"{name}.sql")
            with open(files[name], "w") as f:
                f.write(text)
        half = max(1, args.clients // 2)
        benches = []
        for mode, n in (("prepared", half), ("simple", args.clients - half)):
            argv = [B.PGBENCH, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "trust_user", "-n", "-M", mode,
                    "-c", str(n), "-j", "1", "-T", str(seconds), "-P", "60",
                    "-f", files["read"] + "@5", "-f", files["insert"] + "@3", "-f", files["update"] + "@2", "soak"]
            benches.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        stop = threading.Event()
        stats = {"attempts": 0, "rejected": 0, "not_rejected": 0, "conn_errors": [], "short": 0, "short_errors": []}
        threads = [threading.Thread(target=rejecter, args=(proxy, stop, stats), daemon=True),
                   threading.Thread(target=short_sessions, args=(proxy, stop, stats), daemon=True)]
        for t in threads:
            t.start()
        samples = []
        t0 = time.monotonic()
        cpu0 = B.cpu_seconds(proxy.pid)
        while time.monotonic() - t0 < seconds:
            if proxy.proc.poll() is not None:
                break
            samples.append((round(time.monotonic() - t0), proxy.rss_kb(), proxy.fd_count()))
            print(f"t={samples[-1][0]:5d}s rss={samples[-1][1]} kB fds={samples[-1][2]}", flush=True)
            time.sleep(10)
        stop.set()
        for t in threads:
            t.join(30)
        outs = [b.communicate(timeout=120) for b in benches]
        cpu = B.cpu_seconds(proxy.pid) - cpu0 if proxy.proc.poll() is None else float("nan")
        alive = proxy.proc.poll() is None
        for (out, err), b in zip(outs, benches):
            tps = [line for line in out.splitlines() if line.startswith("tps") or "transactions actually" in line]
            print(f"pgbench exit {b.returncode}: {' | '.join(tps)}" + (f" stderr: {err.strip()[:300]}" if err.strip() else ""))
        rej_stored = pg.psql("SELECT count(*) FROM policies WHERE name = 'rejected' OR tenant_id = 999", db="soak")
        moved = pg.psql("SELECT count(*) FROM policies WHERE name = 'seed' AND tenant_id <> "
                        "CASE workspace_id WHEN 2 THEN 4 WHEN 3 THEN 5 ELSE tenant_id END", db="soak")
        unbound = pg.psql("SELECT count(*) FROM policies p JOIN tenants t ON t.id = p.tenant_id "
                          "WHERE p.workspace_id IS DISTINCT FROM t.workspace_id", db="soak")
        total = pg.psql("SELECT count(*) FROM policies", db="soak")
        rss = [s[1] for s in samples]
        fds = [s[2] for s in samples]
        print(f"\nsoak {seconds}s, {args.clients} pgbench clients + rejecter + short sessions; proxy alive: {alive}; "
              f"proxy CPU {cpu:.0f}s")
        print(f"RSS kB first/min/max/last: {rss[0]}/{min(rss)}/{max(rss)}/{rss[-1]}; "
              f"fds first/min/max/last: {fds[0]}/{min(fds)}/{max(fds)}/{fds[-1]}")
        print(f"rejected writes: {stats['attempts']} sent, {stats['rejected']} rejected with 42501, "
              f"{stats['not_rejected']} NOT rejected; connection errors {len(stats['conn_errors'])}")
        print(f"short sessions: {stats['short']} ok, {len(stats['short_errors'])} errors {stats['short_errors'][:3]}")
        print(f"rows stored {total}; rejected rows stored {rej_stored}; rows not bound to their tenant's "
              f"workspace {unbound}; tenant changes that got through {moved}")
        print("series (t s, RSS kB, fds):", samples)
        proxy.stop()
        print("sanitizer/crash lines in the proxy log:", proxy.sanitizer_reports())
    finally:
        B.cleanup(pg, base)


if __name__ == "__main__":
    main()
