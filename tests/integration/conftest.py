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


# ---------------------------------------------------------------- enforcement (issue 4)

@pytest.fixture(scope="module")
def edb(pg, request):
    """A phase-1 database of this module's own (tgtest.EnforceDb): the module may set
    ENFORCE_DB (its name) and ENFORCE_HELPERS = False (no helper functions)."""
    name = getattr(request.module, "ENFORCE_DB", None) or \
        "tg_" + request.module.__name__.rsplit(".", 1)[-1].replace("test_", "")
    return tgtest.EnforceDb(pg, name, helpers=getattr(request.module, "ENFORCE_HELPERS", True))


@pytest.fixture(scope="module")
def eproxy(pg, edb, tmp_path_factory):
    """One tenantguard in enforce mode for the whole module (tests that reload or
    change modes start their own with proxy_factory)."""
    wd = str(tmp_path_factory.mktemp("eproxy"))
    os.chmod(wd, 0o755)
    p = tgtest.enforce_proxy(pg, wd, "enforce")
    yield p
    p.stop()
    problems = p.sanitizer_reports()
    assert not problems, "sanitizer reports:\n" + "\n".join(problems)


@pytest.fixture
def data(edb):
    """The fresh data set of tgtest.EnforceDb.reset()."""
    edb.reset()
    return edb
