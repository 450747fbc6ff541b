"""GET /metrics: Prometheus text format that parses, counters that move with
traffic, 404 for anything else, off unless metrics_port is set."""
import itertools
import subprocess

import psycopg
import pytest

import tgtest
from test_admin_common import (connect, console_proxy, http_status, metric, ok, parse_metrics, scrape)
from test_backfill_common import fresh_db

_n = itertools.count()


@pytest.fixture
def db(pg):
    d = fresh_db(pg, f"adm_met_{next(_n)}")     # 3 workspaces, 9 tenants, 300 unbound rows per table
    return d


def mproxy(proxy_factory, workdir, **settings):
    port = tgtest.free_port()
    s = {"metrics_port": port}
    s.update(settings)
    p = console_proxy(proxy_factory, workdir, s)
    p.metrics_port = port
    tgtest.wait_until(lambda: tgtest.port_open(port), 10, what="the metrics port")
    return p


def sample(p):
    status, ctype, text = scrape(p.metrics_port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    return parse_metrics(text)


def test_counters_move_with_traffic(proxy_factory, workdir, db):
    p = mproxy(proxy_factory, workdir, mode="enforce", violation_audit="on", sidecar_dsn=db.dsn)
    m0 = sample(p)
    info = [dict(k[1]) for k, v in m0.items() if k[0] == "tenantguard_info" and v == 1]
    assert len(info) == 1 and info[0]["version"]
    assert metric(m0, "tenantguard_connections", kind="client") == 0
    assert metric(m0, "tenantguard_table_mode", table="public.policies", mode="enforce") == 1
    assert metric(m0, "tenantguard_table_mode", table="public.policies", mode="observe") == 0
    with psycopg.connect(p.dsn(db=db.name), autocommit=True) as app:
        for i in range(5):
            app.execute("INSERT INTO policies (tenant_id, name) VALUES (1, 'm')")   # R1: rewritten
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (1, 3, 'm')")
        m1 = sample(p)
        assert metric(m1, "tenantguard_connections", kind="client") == 1
        assert metric(m1, "tenantguard_connections", kind="server") == 1
    tgtest.wait_until(lambda: metric(sample(p), "tenantguard_audit_written_total") == 1, 15,
                      what="the violation written")
    m2 = sample(p)
    assert metric(m2, "tenantguard_statements_total", table="public.policies", rule="R1", kind="rewritten") == 5
    assert metric(m2, "tenantguard_statements_total", table="public.policies", rule="R2", kind="rejected") == 1
    assert metric(m2, "tenantguard_server_rejections_total") == 1
    assert metric(m2, "tenantguard_violations_total") == 1
    assert metric(m2, "tenantguard_clients_accepted_total") >= 1
    assert metric(m2, "tenantguard_connections", kind="client") == 0
    # bytes survive the session's end
    assert metric(m2, "tenantguard_bytes_total", side="client", direction="received") > \
        metric(m0, "tenantguard_bytes_total", side="client", direction="received")
    assert metric(m2, "tenantguard_bytes_total", side="server", direction="sent") > 0
    # the same text four more times: answered from the cache
    assert metric(m2, "tenantguard_cache_hits_total") >= 4
    assert metric(m2, "tenantguard_cache_misses_total") >= 2
    # the histogram: cumulative buckets, +Inf = count
    count = metric(m2, "tenantguard_statement_latency_seconds_count")
    assert count >= 6 and metric(m2, "tenantguard_statement_latency_seconds_bucket", le="+Inf") == count
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m2.items()
                     if k[0] == "tenantguard_statement_latency_seconds_bucket" and dict(k[1])["le"] != "+Inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert metric(m2, "tenantguard_statement_latency_seconds_sum") > 0
    assert metric(m2, "tenantguard_audit_dropped_total") == 0


def test_backfill_progress_and_mode_switch_show(proxy_factory, workdir, db):
    p = mproxy(proxy_factory, workdir, sidecar_dsn=db.dsn)
    assert metric(sample(p), "tenantguard_backfill_running") == 0
    with connect(p) as c:
        ok(c, "SET mode = enforce FOR TABLE findings")
        m = sample(p)
        assert metric(m, "tenantguard_table_mode", table="public.findings", mode="enforce") == 1
        assert metric(m, "tenantguard_table_mode", table="public.policies", mode="observe") == 1
        runs = ok(c, "BACKFILL START BATCH 10 THROTTLE 30").rows
        total = sum(int(r[5]) for r in runs)
        seen = set()
        def progressed():
            s = sample(p)
            assert metric(s, "tenantguard_backfill_running") == 1
            assert metric(s, "tenantguard_backfill_rows_total") == total
            seen.add(metric(s, "tenantguard_backfill_rows_done"))
            return len({v for v in seen if v > 0}) >= 2
        tgtest.wait_until(progressed, 30, what="backfill progress in the metrics")
        ok(c, "BACKFILL PAUSE")
        assert metric(sample(p), "tenantguard_backfill_paused") == 1
        ok(c, "BACKFILL CANCEL")
        assert metric(sample(p), "tenantguard_backfill_running") == 0


def test_anything_but_get_metrics_is_404(proxy_factory, workdir):
    p = mproxy(proxy_factory, workdir)
    assert http_status(p.metrics_port, "/") == 404
    assert http_status(p.metrics_port, "/metrics/x") == 404
    assert http_status(p.metrics_port, "/metrics", method="POST") == 404
    assert http_status(p.metrics_port, "/metrics?debug=1") == 200
    assert http_status(p.metrics_port, "/metrics", method="HEAD") == 200
    # the proxy keeps serving
    with p.connect() as app:
        assert app.execute("SELECT 1").fetchone()[0] == 1


def test_metrics_are_off_by_default(proxy_factory, workdir):
    p = console_proxy(proxy_factory, workdir)
    with connect(p) as c:
        keys = {r[1]: r for r in ok(c, "SHOW CONFIG").rows}
    assert keys["metrics_port"][2] == "0"
    assert "metrics on" not in p.log()


def test_metrics_port_in_use_fails_the_start(proxy_factory, workdir):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        p = console_proxy(proxy_factory, workdir, {"metrics_port": s.getsockname()[1]}, start=False)
        r = subprocess.run([tgtest.BINARY, "-c", p.config_path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "metrics: cannot listen on" in r.stderr
    finally:
        s.close()
