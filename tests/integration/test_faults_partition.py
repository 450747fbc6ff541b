"""A network partition between tenantguard and PostgreSQL.

Two network namespaces made by the test, joined by a veth pair: tenantguard runs in
one (clients reach it through its unix socket), and in the other a small forwarder
passes TCP on the veth address to PostgreSQL's unix socket. `ip link set down` on
the server side cuts the link; static neighbour entries make the cut a silent one
(packets vanish, as across a real network), not a quick "no route".

Asserts: during the partition a new login fails with tenantguard's
server_connect_timeout error instead of hanging; a query sent by an existing session
waits, and completes once the link is back; new logins work again after it.
Needs root and `ip netns` (CI runs as root); skipped with the reason otherwise."""
import os
import subprocess
import sys
import threading

import psycopg
import pytest

import tgtest

FORWARDER = r"""
import socket, sys, threading
listen, target = (sys.argv[1], int(sys.argv[2])), sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(listen); ls.listen(64)
print("ready", flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for x in (a, b):
        try: x.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    c, _ = ls.accept()
    s = socket.socket(socket.AF_UNIX); s.connect(target)
    for a, b in ((c, s), (s, c)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
"""


def sh(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


@pytest.fixture
def partition(pg):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    tag = f"{os.getpid() % 100000}"
    ns_px, ns_pg, va, vb = f"tgpx{tag}", f"tgpg{tag}", f"tgva{tag}", f"tgvb{tag}"
    a_ip, b_ip = "10.231.77.1", "10.231.77.2"
    if sh("ip", "netns", "add", ns_px, check=False).returncode != 0:
        pytest.skip("ip netns add failed: network namespaces are not available here")
    procs = []
    try:
        sh("ip", "netns", "add", ns_pg)
        sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        sh("ip", "link", "set", va, "netns", ns_px)
        sh("ip", "link", "set", vb, "netns", ns_pg)
        for ns, dev, ip in ((ns_px, va, a_ip), (ns_pg, vb, b_ip)):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        mac = {}
        for ns, dev in ((ns_px, va), (ns_pg, vb)):
            mac[dev] = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()
        sh("ip", "netns", "exec", ns_px, "ip", "neigh", "replace", b_ip, "lladdr", mac[vb], "dev", va,
           "nud", "permanent")
        sh("ip", "netns", "exec", ns_pg, "ip", "neigh", "replace", a_ip, "lladdr", mac[va], "dev", vb,
           "nud", "permanent")
        fwd = subprocess.Popen(["ip", "netns", "exec", ns_pg, sys.executable, "-c", FORWARDER, b_ip, "5432",
                                os.path.join(pg.sockdir, f".s.PGSQL.{pg.port}")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(fwd)
        assert fwd.stdout.readline().strip() == "ready", fwd.stderr.read()

        def cut(down):
            sh("ip", "netns", "exec", ns_pg, "ip", "link", "set", vb, "down" if down else "up")
        yield {"ns": ns_px, "server": b_ip, "cut": cut}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for ns in (ns_px, ns_pg):
            sh("ip", "netns", "del", ns, check=False)


def test_partition_between_proxy_and_server(partition, proxy_factory, workdir):
    proxy = proxy_factory({"server_host": partition["server"], "server_port": 5432, "unix_socket_dir": workdir,
                           "server_connect_timeout": 2}, start=False)
    proxy.argv_prefix = ["ip", "netns", "exec", partition["ns"]]
    proxy.start(wait=False)
    sock = os.path.join(workdir, f".s.PGSQL.{proxy.port}")
    tgtest.wait_until(lambda: os.path.exists(sock) or proxy.proc.poll() is not None, 15, what="the proxy socket")
    dsn = f"host={workdir} port={proxy.port} user=trust_user dbname=app connect_timeout=60"

    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    held = psycopg.connect(dsn, autocommit=True)
    assert held.execute("SELECT 2").fetchone()[0] == 2

    partition["cut"](True)
    try:
        # a new login: tenantguard's own connect timeout, not a hang
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(dsn).close()
        assert "server_connect_timeout" in str(e.value), str(e.value)
        # an existing session's query waits for the link ...
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("v", held.execute("SELECT 3").fetchone()[0]),
                             daemon=True)
        t.start()
        t.join(1)
        assert "v" not in result
    finally:
        partition["cut"](False)
    # ... and completes once it is back
    t.join(60)
    assert result.get("v") == 3
    held.close()
    tgtest.wait_until(lambda: psycopg.connect(dsn, autocommit=True).execute("SELECT 4").fetchone()[0] == 4, 60,
                      what="new logins after the partition")
    assert proxy.proc.poll() is None
