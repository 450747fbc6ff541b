"""pytest fixtures: one PostgreSQL cluster per run, a fresh tenantguard per test."""
import os
import shutil

import pytest

import tgtest

SCHEMA = os.path.join(tgtest.REPO, "sql", "demo_schema.sql")


@pytest.fixture(scope="session")
def pg():
    base = tgtest.make_tempdir("tg-pg-")
    cluster = tgtest.PgCluster(base)
    cluster.start()
    cluster.psql_file(SCHEMA, db="app", user="app")
    yield cluster
    cluster.stop("immediate")
    if not os.environ.get("TG_KEEP_TMP"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path):
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


@pytest.fixture
def proxy_factory(pg, workdir):
    """proxy_factory(settings=None, extra_sections="", start=True) -> tgtest.Proxy.

    Every proxy is stopped at teardown, and a test fails when a sanitizer
    reported anything in its log.
    """
    started = []

    def make(settings=None, extra_sections="", start=True):
        p = tgtest.Proxy(pg, workdir, settings, extra_sections)
        started.append(p)
        if start:
            p.start()
        return p

    yield make
    problems = []
    for p in started:
        p.stop()
        problems += p.sanitizer_reports()
    assert not problems, "sanitizer reports:\n" + "\n".join(problems)


@pytest.fixture
def proxy(proxy_factory):
    """A tenantguard with default settings in front of the test cluster."""
    return proxy_factory()
