"""tgtest -- helpers for tenantguard's integration tests.

A real PostgreSQL 15 cluster (initdb in a temp dir, free port, run as an
unprivileged user when we are root) and real tenantguard processes, each with
its own config on a free port. No mocks: tests assert on rows, SQLSTATEs and
messages.
"""
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_BIN = os.environ.get("TG_PG_BIN", "/usr/lib/postgresql/15/bin")
BINARY = os.environ.get("TG_BINARY", os.path.join(REPO, "tenantguard"))

# Passwords of the test roles. Tests assert that none of them ever shows up in
# a tenantguard log line.
PASSWORDS = {
    "tg_admin": "admin-Secret-77",
    "app": "app-Secret-42",
    "md5_user": "md5-Secret-13",
    "plain_user": "plain-Secret-21",
    "trust_user": None,
}


def wait_until(fn, timeout=10.0, interval=0.02, what="condition"):
    """Poll fn() until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 -- polled conditions may raise
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                         (f" (last error: {last_exc!r})" if last_exc else ""))


def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _unpriv_user():
    """The account PostgreSQL runs as when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres) exists")


class PgCluster:
    """A throwaway PostgreSQL 15 cluster."""

    def __init__(self, base):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.sockdir = os.path.join(base, "sock")
        self.certdir = os.path.join(base, "certs")
        self.logfile = os.path.join(base, "postgres.log")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = _unpriv_user()

    # -- running commands as the cluster's owner
    def _as_owner(self, argv, **kw):
        if self.user:
            argv = ["runuser", "-u", self.user.pw_name, "--"] + argv
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)

    def _chown(self, path):
        if self.user and os.path.isfile(path):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        elif self.user:
            for root, dirs, files in os.walk(path):
                os.chown(root, self.user.pw_uid, self.user.pw_gid)
                for f in files:
                    os.chown(os.path.join(root, f), self.user.pw_uid, self.user.pw_gid)

    def _make_certs(self):
        """A CA and a server certificate for localhost / 127.0.0.1."""
        os.makedirs(self.certdir, exist_ok=True)
        d = self.certdir
        run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, cwd=d)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=tenantguard-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
        with open(os.path.join(d, "san.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt")
        os.chmod(os.path.join(d, "server.key"), 0o600)
        os.chmod(os.path.join(d, "ca.key"), 0o600)

    @property
    def ca_file(self):
        return os.path.join(self.certdir, "ca.crt")

    @property
    def cert_file(self):
        return os.path.join(self.certdir, "server.crt")

    @property
    def key_file(self):
        return os.path.join(self.certdir, "server.key")

    def start(self):
        os.makedirs(self.sockdir, exist_ok=True)
        self._make_certs()
        # The server's copy of the key must belong to the server's account.
        pg_certs = os.path.join(self.base, "pgcerts")
        os.makedirs(pg_certs, exist_ok=True)
        for f in ("server.crt", "server.key", "ca.crt"):
            shutil.copy(os.path.join(self.certdir, f), pg_certs)
        os.chmod(os.path.join(pg_certs, "server.key"), 0o600)
        os.chmod(self.base, 0o755)
        self._chown(self.sockdir)
        self._chown(pg_certs)
        os.makedirs(self.datadir, exist_ok=True)
        self._chown(self.datadir)
        open(self.logfile, "a").close()
        self._chown(self.logfile)
        self._as_owner([os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--locale=C.UTF-8", "--no-sync"])
        conf = f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
max_connections = 300
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '{pg_certs}/server.crt'
ssl_key_file = '{pg_certs}/server.key'
ssl_ca_file = '{pg_certs}/ca.crt'
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_connections = off
"""
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(conf)
        hba = """
local   all         all                         trust
host    all         trust_user  127.0.0.1/32    trust
host    all         md5_user    127.0.0.1/32    md5
host    all         plain_user  127.0.0.1/32    password
host    all         all         127.0.0.1/32    scram-sha-256
host    replication all         127.0.0.1/32    scram-sha-256
"""
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write(hba)
        self._chown(self.datadir)
        self._as_owner([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                        "-w", "-t", "60", "start"])
        self._bootstrap()

    def _bootstrap(self):
        sql = [
            f"CREATE ROLE tg_admin SUPERUSER LOGIN PASSWORD '{PASSWORDS['tg_admin']}'",
            f"CREATE ROLE app LOGIN PASSWORD '{PASSWORDS['app']}'",
            "SET password_encryption = 'md5'",
            f"CREATE ROLE md5_user LOGIN PASSWORD '{PASSWORDS['md5_user']}'",
            "RESET password_encryption",
            f"CREATE ROLE plain_user LOGIN PASSWORD '{PASSWORDS['plain_user']}'",
            "CREATE ROLE trust_user LOGIN",
            "CREATE DATABASE app OWNER app",
        ]
        for s in sql:
            self.psql(s, db="postgres")
        for role in ("md5_user", "plain_user", "trust_user"):
            self.psql(f"GRANT app TO {role}", db="postgres")

    def stop(self, mode="fast"):
        try:
            self._as_owner([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-m", mode,
                            "-w", "stop"])
        except subprocess.CalledProcessError:
            pass

    def restart_server(self, mode="fast"):
        self.stop(mode)
        self._as_owner([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                        "-w", "-t", "60", "start"])

    def psql(self, sql, db="app", user="postgres", check=True):
        """Run SQL directly (unix socket, trust) and return stdout (unaligned, tuples only)."""
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", self.sockdir, "-p", str(self.port), "-U", user, "-d", db,
                            "-c", sql], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def psql_file(self, path, db="app", user="postgres"):
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                            "-p", str(self.port), "-U", user, "-d", db, "-f", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql -f {path} failed: {r.stderr.strip()}")

    def dsn(self, user="postgres", db="app", **extra):
        """A libpq URI straight to the server (not through the proxy)."""
        s = f"host={self.sockdir} port={self.port} user={user} dbname={db}"
        for k, v in extra.items():
            s += f" {k}={v}"
        return s

    def direct(self, db="app", user="postgres", **kw):
        import psycopg
        return psycopg.connect(self.dsn(user=user, db=db), autocommit=True, **kw)

    def create_database(self, name, template_sql=None):
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", db="postgres")
        self.psql(f"CREATE DATABASE {name} OWNER app", db="postgres")
        if template_sql:
            self.psql_file(template_sql, db=name, user="app")


class Proxy:
    """One tenantguard process with its own config file and port."""

    def __init__(self, pg, workdir, settings=None, extra_sections=""):
        self.pg = pg
        self.workdir = workdir
        self.port = free_port()
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "server_host": "127.0.0.1",
            "server_port": pg.port,
            "log_level": "debug",
        }
        self.settings.update(settings or {})
        self.extra_sections = extra_sections
        self.config_path = os.path.join(workdir, f"tenantguard-{self.port}.ini")
        self.log_path = os.path.join(workdir, f"tenantguard-{self.port}.log")
        self.proc = None
        self.write_config()

    def write_config(self, settings=None, extra_sections=None):
        if settings:
            self.settings.update(settings)
        if extra_sections is not None:
            self.extra_sections = extra_sections
        lines = ["[tenantguard]"] + [f"{k} = {v}" for k, v in self.settings.items()]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_sections + "\n")

    def start(self, wait=True):
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen([BINARY, "-c", self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        if wait:
            wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 15,
                       what=f"tenantguard on port {self.port}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"tenantguard exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, needle, timeout=10):
        return wait_until(lambda: needle in self.log(), timeout, what=f"log line {needle!r}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, settings=None, extra_sections=None):
        self.write_config(settings, extra_sections)
        n = self.log().count("config reloaded")
        self.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log().count("config reloaded") > n or
                   self.log().count("reload failed") > 0, 10, what="reload")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def sanitizer_reports(self):
        text = self.log()
        return [line for line in text.splitlines()
                if "AddressSanitizer" in line or "runtime error:" in line
                or "LeakSanitizer" in line]

    # -- clients
    def dsn(self, user="app", db="app", password=None, sslmode="disable", **extra):
        if password is None:
            password = PASSWORDS.get(user)
        s = f"host=127.0.0.1 port={self.port} user={user} dbname={db} sslmode={sslmode}"
        if password:
            s += f" password={password}"
        for k, v in extra.items():
            s += f" {k}={v}"
        return s

    def connect(self, user="app", db="app", autocommit=True, **kw):
        import psycopg
        return psycopg.connect(self.dsn(user=user, db=db, **kw), autocommit=autocommit)

    def psql(self, sql, user="app", db="app", check=True, extra_args=(), **dsnkw):
        """Run psql through the proxy; returns CompletedProcess."""
        r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            *extra_args, "-c", sql, self.dsn(user=user, db=db, **dsnkw)],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql through proxy failed: {r.stderr.strip()}")
        return r


def make_tempdir(prefix="tg-"):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d
