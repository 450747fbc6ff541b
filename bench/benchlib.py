"""Shared pieces of tenantguard's benchmarks: a throwaway PostgreSQL, PgBouncer
and tenantguard side by side, pgbench runs with per-transaction logs, CPU of a
process from /proc. Run with Debian's /usr/bin/python3."""
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import tgtest  # noqa: E402

PGBENCH = os.path.join(tgtest.PG_BIN, "pgbench")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user+system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PgBouncer:
    def __init__(self, pg, workdir, pool_mode="session", pool_size=20, max_client_conn=2000):
        self.pg = pg
        self.port = tgtest.free_port()
        self.workdir = workdir
        self.ini = os.path.join(workdir, "pgbouncer.ini")
        users = os.path.join(workdir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"trust_user" ""\n"app" ""\n')
        with open(self.ini, "w") as f:
            f.write(f"""[databases]
* = host=127.0.0.1 port={pg.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
auth_type = trust
auth_file = {users}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
max_db_connections = 0
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
unix_socket_dir =
ignore_startup_parameters = extra_float_digits,options
""")
        self.proc = None

    def start(self):
        argv = ["pgbouncer", self.ini]
        if os.geteuid() == 0:
            os.chmod(self.workdir, 0o777)
            argv = ["runuser", "-u", "postgres", "--"] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tgtest.wait_until(lambda: tgtest.port_open(self.port), 10, what="pgbouncer")
        return self

    @property
    def pid(self):
        with open(os.path.join(self.workdir, "pgbouncer.pid")) as f:
            return int(f.read().strip())

    def stop(self):
        """Stop PgBouncer itself: under runuser (as root) the child we started
        does not pass the signal on, and a PgBouncer left behind keeps
        retrying its vanished server and takes CPU from the next benchmark."""
        if not self.proc:
            return
        try:
            pid = self.pid
        except (OSError, ValueError):
            pid = self.proc.pid
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            try:
                tgtest.wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                                  open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
                                  10, what="pgbouncer to exit")
                break
            except Exception:
                continue
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def pgbench(port, db, args, duration, clients, logdir, user="trust_user", env=None):
    """Run pgbench; return (tps, p99_ms, n_transactions, output)."""
    return pgbench_collect(pgbench_async(port, db, args, duration, clients, logdir, user, env, threads=2))


RELAY_INSERT_SQL = "\\set r random(1, 1000000)\nINSERT INTO bench_insert (a, b) VALUES (:r, 'relay');\n"


def relay_db(pg, wd):
    """The database of the relay benchmarks: pgbench's tables (scale 10) and a
    one-row INSERT script into bench_insert; returns the script's path."""
    pg.psql("CREATE DATABASE bench OWNER trust_user", db="postgres")
    subprocess.run([PGBENCH, "-i", "-q", "-s", "10", "-h", pg.sockdir, "-p", str(pg.port),
                    "-U", "trust_user", "bench"], check=True, capture_output=True)
    pg.psql("CREATE TABLE bench_insert (id bigserial PRIMARY KEY, a int, b text)", db="bench",
            user="trust_user")
    script = os.path.join(wd, "insert.sql")
    with open(script, "w") as f:
        f.write(RELAY_INSERT_SQL)
    os.chmod(script, 0o644)
    return script


def median(xs):
    return statistics.median(xs) if xs else 0.0


def median_ci(xs, level=0.95):
    """A distribution-free confidence interval for the median of xs: the
    k-th smallest and k-th largest value, k the largest rank whose two tails
    of Binomial(n, 1/2) hold at most 1 - level together. Returns (lo, hi,
    coverage); (None, None, 0) when n is too small for any such interval
    (n < 6 at 95%)."""
    xs = sorted(xs)
    n = len(xs)
    from math import comb
    best = None
    tail = 0.0
    for k in range(1, n // 2 + 1):
        tail += comb(n, k - 1) / 2 ** n        # P(X <= k - 1)
        if 2 * tail > 1 - level:
            break
        best = (xs[k - 1], xs[n - k], 1 - 2 * tail)
    return best if best else (None, None, 0.0)


def fmt_ratio(xs):
    """'median [lo, hi]' of paired ratios, the interval from median_ci."""
    m = median(xs)
    lo, hi, cov = median_ci(xs)
    if lo is None:
        return f"{m:.2f} (n={len(xs)})"
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def pgbench_async(port, db, args, duration, clients, logdir, user="trust_user", env=None, threads=1):
    """Start pgbench (with a per-transaction log in logdir); pgbench_collect()
    waits for it and reads its results."""
    os.makedirs(logdir, exist_ok=True)
    for f in os.listdir(logdir):
        os.unlink(os.path.join(logdir, f))
    prefix = os.path.join(logdir, "tx")
    argv = [PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-n", "-T", str(duration),
            "-c", str(clients), "-j", str(threads), "-l", "--log-prefix", prefix] + args + [db]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), logdir


def pgbench_collect(handle):
    """(tps, p99_ms, n_transactions, output) of a pgbench_async() run."""
    proc, logdir = handle
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed: {err}\n{out}")
    m = re.search(r"tps = ([\d.]+) \((without|excluding)", out)
    tps = float(m.group(1)) if m else 0.0
    lat = []
    for f in os.listdir(logdir):
        with open(os.path.join(logdir, f)) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)] / 1000.0 if lat else 0.0
    return tps, p99, len(lat), out


def start_cluster():
    base = tgtest.make_tempdir("tg-bench-")
    pg = tgtest.PgCluster(base)
    pg.start()
    # More connections for the idle-client test; benchmarks are not about durability.
    return pg, base


def cleanup(pg, base):
    pg.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


def workdir():
    d = tempfile.mkdtemp(prefix="tg-bench-w-")
    os.chmod(d, 0o777)
    return d
