#!/usr/bin/python3
"""bench/relay_callgrind -- user-space instructions per relayed transaction,
tenantguard against PgBouncer (session mode), counted by valgrind's callgrind.

    bench/relay_callgrind.py [--clients 8] [--small 2000] [--large 6000]
                             [--workload select|insert] [--mode prepared|simple]

Each proxy runs under callgrind in front of the same throwaway PostgreSQL;
pgbench sends `--small` and then, with a fresh proxy, `--large` transactions
per client. The difference of the two totals divided by the difference of
the transaction counts is the cost of one transaction alone: start-up,
logins and shutdown cancel out. Instruction counts do not depend on the
machine's load, so this figure is stable where TPS on a 2-core machine is
not; kernel time (the syscalls, the same number for both proxies) is not in
it -- bench/relay measures the whole.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import tgtest  # noqa: E402



def total_instructions(outfile):
    r = subprocess.run(["callgrind_annotate", outfile], capture_output=True, text=True, check=True)
    m = re.search(r"^([\d,]+) .*PROGRAM TOTALS", r.stdout, re.M)
    if not m:
        raise RuntimeError(f"no totals in {outfile}")
    return int(m.group(1).replace(",", ""))


def run_pgbench(port, args, clients, per_client):
    argv = [B.PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", "trust_user", "-n", "-c", str(clients),
            "-j", "2", "-t", str(per_client)] + args + ["bench"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench failed: {r.stderr}")
    m = re.search(r"actually processed: (\d+)/", r.stdout)
    return int(m.group(1))


def measure_tenantguard(pg, wd, args, clients, per_client, tag):
    out = os.path.join(wd, f"tg-{tag}.cg")
    proxy = tgtest.Proxy(pg, wd, {"log_level": "warning", "max_client_conn": 100})
    proxy.argv_prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    proxy.start()
    try:
        n = run_pgbench(proxy.port, args, clients, per_client)
    finally:
        proxy.stop(timeout=60)
    return n, total_instructions(out)


def measure_pgbouncer(pg, wd, args, clients, per_client, tag):
    sub = os.path.join(wd, f"pgb-{tag}")
    os.makedirs(sub)
    out = os.path.join(sub, "pgb.cg")
    bouncer = B.PgBouncer(pg, sub)
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "pgbouncer", bouncer.ini]
    if os.geteuid() == 0:
        os.chmod(wd, 0o777)
        os.chmod(sub, 0o777)
        argv = ["runuser", "-u", "postgres", "--"] + argv
    bouncer.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tgtest.wait_until(lambda: tgtest.port_open(bouncer.port), 60, what="pgbouncer under valgrind")
    try:
        n = run_pgbench(bouncer.port, args, clients, per_client)
    finally:
        bouncer.stop()
    # callgrind writes its file as the process exits
    tgtest.wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > 0, 60, what="callgrind output")
    time.sleep(0.5)
    return n, total_instructions(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--small", type=int, default=2000, help="transactions per client, first run")
    ap.add_argument("--large", type=int, default=6000, help="transactions per client, second run")
    ap.add_argument("--workload", choices=["select", "insert"], default="select")
    ap.add_argument("--mode", choices=["simple", "extended", "prepared"], default="prepared")
    ap.add_argument("--keep", metavar="DIR", help="copy the callgrind files here (for callgrind_annotate)")
    args = ap.parse_args()

    pg, base = B.start_cluster()
    wd = B.workdir()
    try:
        script = B.relay_db(pg, wd)
        wargs = (["-S"] if args.workload == "select" else ["-f", script]) + ["-M", args.mode]

        print(f"{args.workload} -M {args.mode}, {args.clients} clients, {args.small} and {args.large} "
              f"transactions per client")
        per_tx = {}
        for name, fn in (("pgbouncer", measure_pgbouncer), ("tenantguard", measure_tenantguard)):
            n1, i1 = fn(pg, wd, wargs, args.clients, args.small, "small")
            n2, i2 = fn(pg, wd, wargs, args.clients, args.large, "large")
            per_tx[name] = (i2 - i1) / (n2 - n1)
            print(f"{name:11s} {i1:>13,} instr for {n1:>6} tx, {i2:>13,} for {n2:>6} tx: "
                  f"{per_tx[name]:,.0f} instructions per transaction", flush=True)
        print(f"tenantguard/pgbouncer: {per_tx['tenantguard'] / per_tx['pgbouncer']:.2f}")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for root, _, files in os.walk(wd):
                for f in files:
                    if f.endswith(".cg"):
                        name = os.path.basename(root) + "-" + f if f == "pgb.cg" else f
                        shutil.copy(os.path.join(root, f), os.path.join(args.keep, name))
            print(f"callgrind files in {args.keep}")
    finally:
        B.cleanup(pg, base)


if __name__ == "__main__":
    main()
