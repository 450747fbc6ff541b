#!/usr/bin/python3
"""bench/storm -- a connection storm through tenantguard in enforce mode: pgbench
with a new connection per transaction (-C) at a target rate (-R, default 2,000/s)
for --seconds (default 30); each session logs in and does one INSERT into a watched
table (R1: the workspace is derived). Then the same storm straight to PostgreSQL
for reference.

Reports per target: sessions done, rate reached, errors (pgbench's aborted clients
and failed transactions; with the proxy's max_client_conn far above the client
count none is expected), latency percentiles of connect + INSERT, and the proxy's
CPU. At the end every stored row is checked against its tenant's workspace.

    bench/storm.py [--rate 2000] [--seconds 30] [--clients 64] [--server-pool]

PostgreSQL forks a backend per connection, which caps a storm at its own
connect rate. With --server-pool, tenantguard's server is a PgBouncer in
session mode that keeps its server connections between client sessions
(DISCARD ALL between them, so each tenantguard session starts on a clean
one): the storm then measures tenantguard's own connection handling, and the
reference is the same storm straight to that PgBouncer.

Also printed: CPU milliseconds per session of each kind of process on the
machine (PostgreSQL's backends, PgBouncer, pgbench, tenantguard), which shows
what bounds the rate when everything shares one machine.

Not a test: figures for the issue's closing note. The machine is shared: quote
the rate reached, not only the target.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import tgtest  # noqa: E402

from test_security_rewrite import phase1_database  # noqa: E402  (tests/integration)

SCRIPT = "\\set t random(3, 4)\nINSERT INTO policies (tenant_id, name) VALUES (:t, '{name}');\n"


def percentiles(logdir):
    lat = []
    for f in os.listdir(logdir):
        with open(os.path.join(logdir, f)) as fh:
            for line in fh:
                p = line.split()
                if len(p) >= 3 and p[2].isdigit():
                    lat.append(int(p[2]) / 1000.0)
    lat.sort()
    if not lat:
        return {}
    return {q: lat[min(len(lat) - 1, int(len(lat) * q / 100))] for q in (50, 90, 99, 99.9)} | {"max": lat[-1]}


def proc_cpu():
    """{pid: (kind, cpu seconds)} of every process now: kind is the command name
    (postgres, pgbouncer, pgbench, tenantguard)."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                d = f.read()
        except OSError:
            continue
        kind = d[d.index("(") + 1:d.rindex(")")]
        fields = d.rsplit(")", 1)[1].split()
        out[p] = (kind, (int(fields[11]) + int(fields[12])) / B.CLK_TCK)
    return out


class CpuByKind:
    """CPU seconds spent by each kind of process while running, sampled every
    0.2 s: a process that exits is counted up to its last sample, one that lives
    less than 0.2 s (a backend forked per session straight to PostgreSQL) not at
    all -- so the figures are exact with --server-pool, a lower bound without."""
    KINDS = ("postgres", "pgbouncer", "pgbench", "tenantguard")

    def __enter__(self):
        self.before = proc_cpu()
        self.last = dict(self.before)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop.wait(0.2):
            self.last.update(proc_cpu())

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.last.update(proc_cpu())
        self.by_kind = collections.Counter()
        for p, (kind, cpu) in self.last.items():
            if kind in self.KINDS:
                self.by_kind[kind] += cpu - self.before.get(p, (kind, 0.0))[1]


def storm(port, db, args, wd, pid=None, name="storm"):
    script = os.path.join(wd, "storm.sql")
    with open(script, "w") as f:
        f.write(SCRIPT.format(name=name))
    logdir = os.path.join(wd, f"storm-{port}")
    os.makedirs(logdir, exist_ok=True)
    for f in os.listdir(logdir):
        os.unlink(os.path.join(logdir, f))
    cpu0 = B.cpu_seconds(pid) if pid else 0
    argv = [B.PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", "trust_user", "-n", "-C", "-M", "simple",
            "-c", str(args.clients), "-j", "2", "-T", str(args.seconds)] + (["-R", str(args.rate)] if args.rate else []) + [
            "-f", script, "-l", "--log-prefix", os.path.join(logdir, "tx"), db]
    with CpuByKind() as kinds:
        r = subprocess.run(argv, capture_output=True, text=True)
    cpu = (B.cpu_seconds(pid) - cpu0) if pid else 0
    out = r.stdout + r.stderr
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1)) \
        if "actually processed" in out else 0
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = len(re.findall(r"aborted", r.stderr))
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "fatal" in line.lower()]
    return {"done": done, "rate": done / args.seconds, "failed": int(failed.group(1)) if failed else 0,
            "aborted_clients": aborted, "errors": sorted(set(e.split(":", 2)[-1].strip() for e in errors))[:5],
            "lat_ms": percentiles(logdir), "cpu_s": cpu, "exit": r.returncode, "cpu_by_kind": kinds.by_kind}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000, help="0: as fast as it goes (no -R)")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--server-pool", action="store_true",
                    help="tenantguard -> PgBouncer (session mode, reused server connections) -> PostgreSQL")
    args = ap.parse_args()

    pg, base = B.start_cluster()
    wd = B.workdir()
    try:
        pg.psql("ALTER SYSTEM SET max_connections = 400", db="postgres")
        pg.restart_server()
        phase1_database(pg, "storm")
        settings = {"log_level": "warning", "max_client_conn": 1000, "mode": "enforce"}
        ref = ("direct", pg.port, None)
        bouncer = None
        if args.server_pool:
            bouncer = B.PgBouncer(pg, wd, pool_mode="session", pool_size=args.clients + 8).start()
            settings["server_port"] = bouncer.port
            ref = ("pgbouncer", bouncer.port, None)
        proxy = tgtest.Proxy(pg, wd, settings)
        proxy.start()
        print(f"storm: target {args.rate} connects/s for {args.seconds}s, {args.clients} pgbench clients, "
              f"one INSERT (R1) per session", flush=True)
        for name, port, pid in (("tenantguard", proxy.port, proxy.pid), ref):
            r = storm(port, "storm", args, wd, pid, name)
            lat = " ".join(f"p{k}={v:.1f}" for k, v in r["lat_ms"].items() if k != "max")
            print(f"{name:12s} sessions {r['done']:6d}  rate {r['rate']:7.1f}/s  failed {r['failed']}  "
                  f"aborted clients {r['aborted_clients']}  latency ms {lat} max={r['lat_ms'].get('max', 0):.1f}"
                  + (f"  proxy CPU {r['cpu_s']:.1f}s ({100 * r['cpu_s'] / args.seconds:.0f}% of a core)"
                     if pid else ""), flush=True)
            if r["done"]:
                per = ", ".join(f"{k} {1000 * v / r['done']:.2f}" for k, v in r["cpu_by_kind"].most_common() if v > 0)
                print(f"{'':12s} CPU ms per session by process: {per}", flush=True)
            if r["errors"]:
                print(f"{'':12s} errors: {r['errors']}")
        bad = pg.psql("SELECT count(*) FROM policies p JOIN tenants t ON t.id = p.tenant_id "
                      "WHERE p.name = 'tenantguard' AND p.workspace_id IS DISTINCT FROM t.workspace_id", db="storm")
        via = pg.psql("SELECT count(*) FROM policies WHERE name = 'tenantguard'", db="storm")
        print(f"rows stored through tenantguard {via}, of them not bound to their tenant's workspace: {bad}")
        rss = proxy.rss_kb()
        print(f"proxy after the storm: RSS {rss} kB, fds {proxy.fd_count()}, alive {proxy.proc.poll() is None}")
        proxy.stop()
        if bouncer:
            bouncer.stop()
    finally:
        B.cleanup(pg, base)


if __name__ == "__main__":
    main()
