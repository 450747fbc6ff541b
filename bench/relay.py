#!/usr/bin/python3
"""bench/relay -- PostgreSQL directly vs PgBouncer (session mode) vs tenantguard,
in one run, interleaved: pgbench -S (select-only) and a one-row INSERT, each
with -M simple and -M prepared, 8 clients. Reports median TPS and p99 latency
over the rounds, the ratios, and each proxy's CPU per transaction; then the
proxy's RSS with 1,000 idle clients.

    bench/relay [--rounds 3] [--seconds 10] [--clients 8] [--idle 1000] [--concurrent 0]

The paired ratios come with a distribution-free interval for their median
(about 95%; it needs 6 rounds or more) and the number of rounds tenantguard
came out ahead. --concurrent N adds N rounds per workload in which PgBouncer
and tenantguard run at the same time, half the clients each: both then see
the same machine, which takes most of the run-to-run drift out of their
ratio (a sequential round on this 2-core machine drifts by up to +-15%).

Not a test: figures go to the issue's closing note. The machine is noisy:
quote medians and ratios.
"""
import argparse
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import tgtest  # noqa: E402



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=0, metavar="N",
                    help="N more rounds per workload with PgBouncer and tenantguard at once")
    args = ap.parse_args()

    pg, base = B.start_cluster()
    wd = B.workdir()
    try:
        pg.psql("ALTER SYSTEM SET max_connections = 1200", db="postgres")
        pg.restart_server()
        script = B.relay_db(pg, wd)

        bouncer = B.PgBouncer(pg, wd).start()
        proxy = tgtest.Proxy(pg, wd, {"log_level": "warning", "max_client_conn": 5000})
        proxy.start()
        targets = {"direct": (pg.port, None), "pgbouncer": (bouncer.port, bouncer.pid),
                   "tenantguard": (proxy.port, proxy.proc.pid)}
        workloads = {"select": ["-S"], "insert": ["-f", script]}
        logdir = os.path.join(wd, "logs")
        os.makedirs(logdir, exist_ok=True)
        results = {}
        for rnd in range(args.rounds):
            for wl, wargs in workloads.items():
                for mode in ("simple", "prepared"):
                    # The order turns each round: whatever drifts during a
                    # round (checkpoints, a neighbour's load) falls on each
                    # target in turn, not always on the last one.
                    names = list(targets)
                    k = rnd % len(names)
                    for name in names[k:] + names[:k]:
                        port, pid = targets[name]
                        cpu0 = B.cpu_seconds(pid) if pid else 0
                        tps, p99, n, _ = B.pgbench(port, "bench", wargs + ["-M", mode], args.seconds,
                                                   args.clients, logdir)
                        cpu = (B.cpu_seconds(pid) - cpu0) if pid else 0
                        r = results.setdefault((wl, mode, name), {"tps": [], "p99": [], "cpu_us": []})
                        r["tps"].append(tps)
                        r["p99"].append(p99)
                        if pid and n:
                            r["cpu_us"].append(cpu / n * 1e6)
                        print(f"round {rnd + 1} {wl:6s} {mode:8s} {name:11s} tps {tps:9.0f}  "
                              f"p99 {p99:6.2f} ms" + (f"  cpu/tx {cpu / n * 1e6:6.1f} us" if pid and n else ""),
                              flush=True)

        print("\nmedians over", args.rounds, "rounds,", args.clients, "clients,", args.seconds, "s each")
        print(f"{'workload':16s} {'target':11s} {'tps':>9s} {'p99 ms':>7s} {'cpu/tx us':>9s} "
              f"{'x direct':>8s} {'x pgbouncer':>11s}")
        for wl in workloads:
            for mode in ("simple", "prepared"):
                d = B.median(results[(wl, mode, "direct")]["tps"])
                pb = B.median(results[(wl, mode, "pgbouncer")]["tps"])
                for name in targets:
                    r = results[(wl, mode, name)]
                    t = B.median(r["tps"])
                    print(f"{wl + ' ' + mode:16s} {name:11s} {t:9.0f} {B.median(r['p99']):7.2f} "
                          f"{B.median(r['cpu_us']):9.1f} {t / d:8.2f} {t / pb:11.2f}")

        # The same ratios taken round by round (each pair ran minutes apart
        # at most), then the median: steadier than a ratio of medians when
        # the machine's speed drifts over the run.
        print("\npaired per round: median of the rounds' ratios [interval], rounds tenantguard was ahead")
        print(f"{'workload':16s} {'tg/pgbouncer tps':>22s} {'ahead':>6s} {'tg/pgbouncer cpu/tx':>22s} "
              f"{'ahead':>6s} {'tg/direct tps':>14s}")
        for wl in workloads:
            for mode in ("simple", "prepared"):
                tg = results[(wl, mode, "tenantguard")]
                pb = results[(wl, mode, "pgbouncer")]
                di = results[(wl, mode, "direct")]
                r_tps = [a / b for a, b in zip(tg["tps"], pb["tps"]) if b]
                r_cpu = [a / b for a, b in zip(tg["cpu_us"], pb["cpu_us"]) if b]
                r_dir = [a / b for a, b in zip(tg["tps"], di["tps"]) if b]
                print(f"{wl + ' ' + mode:16s} {B.fmt_ratio(r_tps):>22s} {ahead(r_tps, True):>6s} "
                      f"{B.fmt_ratio(r_cpu):>22s} {ahead(r_cpu, False):>6s} {B.median(r_dir):14.2f}")

        if args.concurrent:
            concurrent(args, workloads, targets, wd)

        # RSS with idle clients: log in and stay idle.
        if args.idle:
            rss0 = B.rss_kib(proxy.proc.pid)
            conns = []
            for _ in range(args.idle):
                conns.append(idle_client(proxy.port))
            rss1 = B.rss_kib(proxy.proc.pid)
            print(f"\ntenantguard RSS: {rss0} KiB at rest, {rss1} KiB with {args.idle} idle clients "
                  f"({(rss1 - rss0) / args.idle:.1f} KiB per session)")
            for c in conns:
                c.close()
        bouncer.stop()
        proxy.stop()
    finally:
        B.cleanup(pg, base)


def idle_client(port):
    """A raw protocol-3 login as trust_user that then stays idle."""
    s = socket.create_connection(("127.0.0.1", port))
    params = b"user\0trust_user\0database\0bench\0\0"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    buf = b""
    while b"Z\0\0\0\x05" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("login failed")
        buf += chunk
    return s


def ahead(ratios, higher_is_better):
    """'k/n': rounds in which tenantguard did better than PgBouncer."""
    k = sum(1 for r in ratios if (r > 1) == higher_is_better and r != 1)
    return f"{k}/{len(ratios)}"


def concurrent(args, workloads, targets, wd):
    """PgBouncer and tenantguard at the same time, half the clients each."""
    half = max(1, args.clients // 2)
    (pb_port, pb_pid), (tg_port, tg_pid) = targets["pgbouncer"], targets["tenantguard"]
    print(f"\nconcurrent: PgBouncer and tenantguard at once, {half} clients each, {args.seconds} s, "
          f"{args.concurrent} rounds per workload")
    summary = []
    for wl, wargs in workloads.items():
        for mode in ("simple", "prepared"):
            r_tps, r_cpu = [], []
            for rnd in range(args.concurrent):
                order = [("pgbouncer", pb_port, pb_pid), ("tenantguard", tg_port, tg_pid)]
                if rnd % 2:
                    order.reverse()     # who starts first turns each round
                cpu0 = {name: B.cpu_seconds(pid) for name, _, pid in order}
                runs = {name: B.pgbench_async(port, "bench", wargs + ["-M", mode], args.seconds, half,
                                              os.path.join(wd, "logs-" + name))
                        for name, port, _ in order}
                res = {name: B.pgbench_collect(h) for name, h in runs.items()}
                cpu = {name: (B.cpu_seconds(pid) - cpu0[name]) / max(1, res[name][2]) * 1e6
                       for name, _, pid in order}
                tps = {name: res[name][0] for name in res}
                if tps["pgbouncer"] and cpu["pgbouncer"]:
                    r_tps.append(tps["tenantguard"] / tps["pgbouncer"])
                    r_cpu.append(cpu["tenantguard"] / cpu["pgbouncer"])
                print(f"concurrent {rnd + 1} {wl:6s} {mode:8s} tps pgbouncer {tps['pgbouncer']:7.0f} "
                      f"tenantguard {tps['tenantguard']:7.0f}  cpu/tx pgbouncer {cpu['pgbouncer']:5.1f} us "
                      f"tenantguard {cpu['tenantguard']:5.1f} us", flush=True)
            summary.append((wl + " " + mode, r_tps, r_cpu))
    print("\nconcurrent, median of the rounds' ratios [interval], rounds tenantguard was ahead")
    print(f"{'workload':16s} {'tg/pgbouncer tps':>22s} {'ahead':>6s} {'tg/pgbouncer cpu/tx':>22s} {'ahead':>6s}")
    for name, r_tps, r_cpu in summary:
        print(f"{name:16s} {B.fmt_ratio(r_tps):>22s} {ahead(r_tps, True):>6s} {B.fmt_ratio(r_cpu):>22s} "
              f"{ahead(r_cpu, False):>6s}")


if __name__ == "__main__":
    main()
