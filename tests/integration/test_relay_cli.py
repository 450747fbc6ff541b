"""The binary's command line: --help, --version, check-config, and the daemon's
refusal of a bad config file."""
import os
import re
import subprocess

import pytest

import tgtest


def run(*args, timeout=15):
    return subprocess.run([tgtest.BINARY, *args], capture_output=True, text=True, timeout=timeout)


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_help():
    r = run("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("tenantguard ")
    assert "Usage:" in r.stdout
    assert "tenantguard -c FILE" in r.stdout
    assert "check-config" in r.stdout
    assert "SIGTERM" in r.stdout and "SIGHUP" in r.stdout
    assert r.stderr == ""


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"tenantguard \d+\.\d+\.\d+\S*\n", r.stdout)


def test_no_arguments_is_a_usage_error():
    r = run()
    assert r.returncode == 64
    assert "Usage:" in r.stderr


def test_unknown_command():
    r = run("frobnicate")
    assert r.returncode == 64
    assert 'unknown command "frobnicate"' in r.stderr


def test_check_config_good(workdir, pg):
    path = write(workdir, "good.ini", f"""[tenantguard]
listen_addr = 127.0.0.1
listen_port = 6999
server_host = 127.0.0.1
server_port = {pg.port}
server_sslmode = verify-full
server_tls_ca_file = {pg.ca_file}
client_tls_mode = allow
client_tls_cert_file = {pg.cert_file}
client_tls_key_file = {pg.key_file}
max_client_conn = 50
max_packet_size = 1MB
client_login_timeout = 5
client_idle_timeout = 10min
shutdown_timeout = 3
log_format = json
log_level = debug
""")
    r = run("check-config", "-c", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: OK")


BAD = [
    ("[tenantguard]\nlisten_port = 6432\nno_such_key = 1\n", 3, "no_such_key"),
    ("[tenantguard]\nmax_client_conn = 0\n", 2, "max_client_conn"),
    ("[tenantguard]\nlisten_port = 70000\n", 2, "listen_port"),
    ("[tenantguard]\n\nserver_sslmode = sometimes\n", 3, "server_sslmode"),
    ("[tenantguard]\nmax_packet_size = 12 parsecs\n", 2, "max_packet_size"),
    ("[tenantguard]\nclient_tls_mode = maybe\n", 2, "client_tls_mode"),
    ("[nonsense]\nx = 1\n", 1, "nonsense"),   # reported at the section header
    ("[tenantguard]\nlisten_port = 7000\n[nonsense]\n", 3, "nonsense"),   # even with no key after it
    ("listen_port = 1\n", 1, "section"),
]


@pytest.mark.parametrize("text,line,word", BAD, ids=[b[2] for b in BAD])
def test_check_config_bad(workdir, text, line, word):
    path = write(workdir, "bad.ini", text)
    r = run("check-config", "-c", path)
    assert r.returncode == 1
    assert r.stdout == ""
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line}: "), first
    assert word in first


def test_check_config_missing_file(workdir):
    path = os.path.join(workdir, "missing.ini")
    r = run("check-config", "-c", path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:")


def test_check_config_without_c_is_a_usage_error():
    r = run("check-config")
    assert r.returncode == 64
    assert "-c FILE is required" in r.stderr


def test_daemon_refuses_a_bad_config(workdir):
    path = write(workdir, "bad.ini", "[tenantguard]\nlog_level = chatty\n")
    r = run("-c", path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:2: ")
    assert "log_level" in r.stderr


def test_daemon_refuses_a_port_in_use(proxy_factory, proxy):
    other = proxy_factory({"listen_port": proxy.port}, start=False)
    other.start(wait=False)
    assert other.wait_exit(10) == 1
    assert "cannot listen on" in other.log()
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_daemon_unix_socket_listener(pg, proxy_factory, workdir):
    sockdir = os.path.join(workdir, "sock")
    os.makedirs(sockdir)
    proxy = proxy_factory({"unix_socket_dir": sockdir})
    r = subprocess.run(["psql", "-X", "-A", "-t", "-h", sockdir, "-p", str(proxy.port), "-U", "trust_user",
                        "-d", "app", "-c", "SELECT current_user"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "trust_user"
    sock = os.path.join(sockdir, f".s.PGSQL.{proxy.port}")
    assert os.path.exists(sock)
    assert proxy.stop() == 0
    assert not os.path.exists(sock)
