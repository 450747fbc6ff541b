"""Configs that check-config accepts must work: found by fuzz_config (tests/fuzz)."""
import os
import subprocess

import pytest

import tgtest

RWTOOL = os.path.join(os.environ.get("TG_BUILD_DIR", os.path.join(tgtest.REPO, "build")), "tests", "tools", "rwtool")


def check_config(path):
    return subprocess.run([tgtest.BINARY, "check-config", "-c", path], capture_output=True, text=True)


@pytest.mark.parametrize("tables", ["p", "pp"])
def test_check_config_and_the_daemon_agree(pg, proxy_factory, tables):
    """A one-letter table name used to pass check-config and then stop the
    daemon with "out of memory"; now both refuse it, with the same message."""
    proxy = proxy_factory({"mode": "enforce"}, extra_sections=f"[policy]\ntables = {tables}\n", start=False)
    checked = check_config(proxy.config_path)
    if checked.returncode != 0:
        assert "two characters or more" in checked.stderr
        with pytest.raises(RuntimeError) as e:
            proxy.start()
        assert "two characters or more" in str(e.value)
        return
    proxy.start()   # raises when the daemon exits
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_helper_sql_for_an_accepted_identifier_loads(pg, workdir):
    ini = os.path.join(workdir, "dollar.ini")
    with open(ini, "w") as f:
        f.write("[policy]\ntenant_workspace_column = ws$tg$x\n")
    if check_config(ini).returncode != 0:
        return   # refused up front: fine
    sql = subprocess.run([RWTOOL, "--render-helpers", "-c", ini], capture_output=True, check=True).stdout.decode()
    path = os.path.join(workdir, "dollar.sql")
    with open(path, "w") as f:
        f.write(sql)
    os.chmod(path, 0o644)
    pg.create_database("tg_dollar")
    pg.psql('ALTER TABLE IF EXISTS tenants ADD COLUMN "ws$tg$x" bigint', db="tg_dollar", user="app")
    pg.psql_file(path, db="tg_dollar", user="app")   # must load as it does for plain names
