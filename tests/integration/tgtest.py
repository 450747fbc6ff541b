"""tgtest -- helpers for tenantguard's integration tests.

A real PostgreSQL 15 cluster (initdb in a temp dir, free port, run as an
unprivileged user when we are root) and real tenantguard processes, each with
its own config on a free port. No mocks: tests assert on rows, SQLSTATEs and
messages.
"""
import contextlib
import os
import pwd
import random
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


_ports_handed_out = set()


def _unephemeral_range():
    """Ports below the kernel's ephemeral range: no outgoing connection takes one meanwhile."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (low - 12000, low) if low - 12000 >= 1024 else None


def free_port():
    """A port nothing listens on now and that this process has not handed out before.

    Asking the kernel for port 0 can give the same port twice in a row once the first socket is
    closed, so a config that takes a listen port and a console port from two calls could get one
    port for both (a CI run failed so: "cannot listen ... (admin console): Address already in use").
    """
    rng = _unephemeral_range()
    for _ in range(500):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", random.randrange(*rng) if rng else 0))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port found in 500 tries")


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
            # One psql -c (one session): SET alone would not outlive its own psql.
            "SET password_encryption = 'md5'; "
            f"CREATE ROLE md5_user LOGIN PASSWORD '{PASSWORDS['md5_user']}'",
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
        self.start_server()

    def start_server(self):
        """Start the cluster again after stop() (crash recovery after -m immediate)."""
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
        env.update(self.env)
        self.proc = subprocess.Popen(self.argv_prefix + [BINARY, "-c", self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, pass_fds=self.pass_fds)
        if wait:
            wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 15,
                       what=f"tenantguard on port {self.port}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"tenantguard exited with {self.proc.returncode}:\n{self.log()}")
        return self

    # A command the binary runs under, e.g. ["prlimit", "--nofile=256:256", "--"] or
    # ["ip", "netns", "exec", NAME]; set before start().
    argv_prefix = []
    # Extra environment of the process (e.g. NOTIFY_SOCKET); set before start().
    env = {}
    # Descriptors the process inherits (e.g. a listening socket for socket activation).
    pass_fds = ()

    def fd_count(self):
        """Open file descriptors of the proxy process."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def live_sessions(self):
        """Sessions accepted and not yet freed, from the debug log (log_level = debug):
        each session logs "accepted" once and "-> dead" once."""
        log = self.log()
        return log.count(" accepted") - log.count(" -> dead")

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
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def wait_exit(self, timeout=15):
        """Wait for the process to exit on its own; returns its exit code."""
        return self.proc.wait(timeout)

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def sanitized(self):
        """True for an AddressSanitizer build: its quarantine of freed memory makes
        RSS figures meaningless for memory-bound tests."""
        with open(f"/proc/{self.proc.pid}/maps") as f:
            return "libasan" in f.read()

    def wire(self, **kw):
        """A raw protocol connection to this proxy (not logged in)."""
        return PgWire(self.port, **kw)

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


# ---------------------------------------------------------------- raw protocol client
#
# Tests of bad input and of byte-exact transparency speak the protocol
# themselves: PgWire logs in (trust, cleartext, md5 or SCRAM-SHA-256), then
# sends whatever bytes a test wants and reads the answers message by message.

import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402

PROTO_3_0 = 0x00030000
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def error_fields(payload):
    """ErrorResponse / NoticeResponse payload -> {field letter: value}."""
    fields = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        end = payload.index(b"\0", i + 1)
        fields[code] = payload[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return fields


def data_row(payload):
    """DataRow payload -> list of bytes (None for NULL)."""
    n = struct.unpack("!H", payload[:2])[0]
    i, cols = 2, []
    for _ in range(n):
        ln = struct.unpack("!i", payload[i:i + 4])[0]
        i += 4
        if ln < 0:
            cols.append(None)
        else:
            cols.append(payload[i:i + ln])
            i += ln
    return cols


class PgWire:
    """A raw protocol 3.0 client over one TCP connection."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.params = {}
        self.backend_pid = None
        self.backend_key = None

    # -- building messages
    @staticmethod
    def msg(mtype, payload=b""):
        if isinstance(mtype, str):
            mtype = mtype.encode()
        return mtype + struct.pack("!I", len(payload) + 4) + payload

    @staticmethod
    def startup_packet(user="trust_user", database="app", protocol=PROTO_3_0, **params):
        body = struct.pack("!I", protocol)
        for k, v in [("user", user), ("database", database)] + list(params.items()):
            if v is not None:
                body += k.encode() + b"\0" + str(v).encode() + b"\0"
        body += b"\0"
        return struct.pack("!I", len(body) + 4) + body

    @staticmethod
    def code_packet(code, *ints):
        return struct.pack("!II", 8 + 4 * len(ints), code) + b"".join(struct.pack("!I", i) for i in ints)

    @staticmethod
    def query_msg(sql):
        return PgWire.msg("Q", sql.encode() + b"\0")

    @staticmethod
    def parse_msg(sql, name="", types=()):
        return PgWire.msg("P", name.encode() + b"\0" + sql.encode() + b"\0" +
                          struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types))

    @staticmethod
    def bind_msg(params=(), portal="", stmt="", result_formats=()):
        body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!H", 0)
        body += struct.pack("!H", len(params))
        for p in params:
            if p is None:
                body += struct.pack("!i", -1)
            else:
                p = p if isinstance(p, bytes) else str(p).encode()
                body += struct.pack("!i", len(p)) + p
        body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
        return PgWire.msg("B", body)

    @staticmethod
    def describe_msg(kind="P", name=""):
        return PgWire.msg("D", kind.encode() + name.encode() + b"\0")

    @staticmethod
    def execute_msg(portal="", max_rows=0):
        return PgWire.msg("E", portal.encode() + b"\0" + struct.pack("!I", max_rows))

    @staticmethod
    def close_msg(kind="S", name=""):
        return PgWire.msg("C", kind.encode() + name.encode() + b"\0")

    SYNC = b"S\0\0\0\4"
    FLUSH = b"H\0\0\0\4"
    TERMINATE = b"X\0\0\0\4"

    # -- I/O
    def send(self, data):
        self.sock.sendall(data)

    # self.buf holds received bytes; self.pos is where the unread ones start
    # (an offset, so that reading many small messages stays linear).
    pos = 0

    def _fill(self, n):
        """Make sure n unread bytes are buffered."""
        while len(self.buf) - self.pos < n:
            if self.pos > (1 << 20) or self.pos == len(self.buf):
                self.buf = self.buf[self.pos:]
                self.pos = 0
            chunk = self.sock.recv(min(max(65536, n - (len(self.buf) - self.pos)), 1 << 20))
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf) - self.pos} of {n} bytes read")
            self.buf += chunk

    def read_bytes(self, n):
        self._fill(n)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def read_msg(self):
        """The next message as (type, payload). EOFError when the peer closed."""
        self._fill(5)
        p = self.pos
        mtype = chr(self.buf[p])
        ln = struct.unpack("!I", self.buf[p + 1:p + 5])[0]
        self._fill(1 + ln)
        p = self.pos
        payload = bytes(self.buf[p + 5:p + 1 + ln])
        self.pos = p + 1 + ln
        if mtype == "S":
            k, v = payload[:-1].split(b"\0", 1)
            self.params[k.decode()] = v.decode()
        elif mtype == "K":
            self.backend_pid, self.backend_key = struct.unpack("!ii", payload)
        return mtype, payload

    def read_until(self, stop="Z"):
        msgs = []
        while True:
            m = self.read_msg()
            msgs.append(m)
            if m[0] in stop:
                return msgs

    def read_until_closed(self):
        """Messages until the peer closes; a reset counts as a close."""
        msgs = []
        try:
            while True:
                msgs.append(self.read_msg())
        except (EOFError, ConnectionResetError):
            return msgs

    def read_raw_until_closed(self):
        """Every byte not yet read, until the peer closes (a reset counts as a close)."""
        out = bytearray(self.buf[self.pos:])
        self.buf, self.pos = bytearray(), 0
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return bytes(out)
                out += chunk
        except ConnectionResetError:
            return bytes(out)

    def is_closed(self, timeout=10.0):
        """Wait up to timeout for the peer to close (data on the way is read and dropped)."""
        self.sock.settimeout(timeout)
        try:
            self.read_until_closed()
            return True
        except socket.timeout:
            return False

    def expect_error(self):
        """Read until an ErrorResponse; return its fields."""
        while True:
            mtype, payload = self.read_msg()
            if mtype == "E":
                return error_fields(payload)

    def expect_fatal_and_close(self):
        """Read everything until the close; return the fields of the (last) ErrorResponse."""
        msgs = self.read_until_closed()
        errors = [error_fields(p) for t, p in msgs if t == "E"]
        assert errors, f"closed without an ErrorResponse: {msgs!r}"
        return errors[-1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- conveniences
    def login(self, user="trust_user", database="app", password=None, **params):
        """Startup and authentication up to the first ReadyForQuery; returns the messages."""
        if password is None:
            password = PASSWORDS.get(user)
        self.send(self.startup_packet(user, database, **params))
        msgs = []
        while True:
            mtype, payload = self.read_msg()
            msgs.append((mtype, payload))
            if mtype == "E":
                raise PgWireError(error_fields(payload))
            if mtype == "Z":
                return msgs
            if mtype != "R":
                continue
            code = struct.unpack("!I", payload[:4])[0]
            if code == 3:
                self.send(self.msg("p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                self.send(self.msg("p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:
                mechs = payload[4:].split(b"\0")
                self.sasl_mechanisms = [m.decode() for m in mechs if m]
                self.scram_messages = []
                self._scram(user, password)
                msgs += self.scram_messages
                if msgs[-1][0] == "E":
                    raise PgWireError(error_fields(msgs[-1][1]))
            elif code not in (0, 11, 12):
                raise AssertionError(f"unexpected authentication request {code}")

    def starttls(self):
        """SSLRequest, then a TLS handshake (no verification) on the same socket."""
        import ssl
        self.send(self.code_packet(SSL_REQUEST))
        answer = self.read_bytes(1)
        if answer != b"S":
            return answer
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock)
        return answer

    # The GS2 header of SCRAM's client-first message: "n,," = no channel binding,
    # "y,," = "I could bind, but you did not offer -PLUS" (the downgrade check).
    scram_gs2 = "n,,"

    def _scram(self, user, password):
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = (self.scram_gs2 + first_bare).encode()
        self.send(self.msg("p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        mtype, payload = self.read_msg()
        self.scram_messages.append((mtype, payload))
        if mtype == "E":
            raise PgWireError(error_fields(payload))
        assert mtype == "R" and struct.unpack("!I", payload[:4])[0] == 11, (mtype, payload)
        server_first = payload[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(self.scram_gs2.encode()).decode()},r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
        self.send(self.msg("p", final))

    def query(self, sql):
        """Simple query; returns every message up to ReadyForQuery."""
        self.send(self.query_msg(sql))
        return self.read_until("Z")

    def scalar(self, sql):
        """The first column of the first row of a simple query, as str; errors raise."""
        msgs = self.query(sql)
        for t, p in msgs:
            if t == "E":
                raise PgWireError(error_fields(p))
        rows = [data_row(p) for t, p in msgs if t == "D"]
        v = rows[0][0]
        return None if v is None else v.decode()


class PgWireError(Exception):
    def __init__(self, fields):
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")
        self.fields = fields
        self.sqlstate = fields.get("C")


def rows_of(msgs):
    """DataRows of a message list, as lists of str."""
    return [[None if c is None else c.decode() for c in data_row(p)] for t, p in msgs if t == "D"]


def errors_of(msgs):
    return [error_fields(p) for t, p in msgs if t == "E"]


# ---------------------------------------------------------------- processes and tools

def rss_kb(pid):
    """VmRSS of a process in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def pgbench(proxy, *args, user="app", db="app", timeout=120):
    """Run pgbench against the proxy; returns CompletedProcess."""
    env = dict(os.environ, PGPASSWORD=PASSWORDS[user] or "", PGSSLMODE="disable")
    argv = [os.path.join(PG_BIN, "pgbench"), "-h", "127.0.0.1", "-p", str(proxy.port), "-U", user,
            *args, db]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def tool_path(name):
    """A test client built by `make check` under tests/tools."""
    build = os.environ.get("TG_BUILD_DIR", os.path.join(REPO, "build"))
    return os.path.join(build, "tests", "tools", name)


class TcpForwarder:
    """Forwards connections from listen_host:<free port> to a target, byte for byte.

    Used to reach the server under an address its certificate does not name,
    and to cut connections under a proxy's feet (drop_all).
    """

    def __init__(self, target_port, target_host="127.0.0.1", listen_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((listen_host, 0))
        self.lsock.listen(64)
        self.host, self.port = self.lsock.getsockname()
        self.pairs = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, s))
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        with self.lock:
            for c, s in self.pairs:
                for x in (c, s):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.pairs = []

    def close(self):
        self.closed = True
        self.lsock.close()
        self.drop_all()


def connect_error(dsn, **kw):
    """Connect with psycopg expecting a failure; return the error text.

    The failed PGconn is released before returning: a traceback kept alive (as
    pytest.raises keeps it) would keep its socket open, and the proxy would
    wait for that half-logged-in client until client_login_timeout.
    """
    import gc
    import psycopg
    try:
        psycopg.connect(dsn, **kw).close()
    except psycopg.OperationalError as e:
        msg = str(e)
    else:
        raise AssertionError(f"connected to {dsn!r}, expected a failure")
    gc.collect()
    return msg


# ---------------------------------------------------------------- enforcement (issue 4)
#
# A database after phase 1 (every tenant-owned table has a nullable
# workspace_id, tenants has a unique (id, workspace_id)), with tenantguard's SQL
# helpers rendered by rwtool --render-helpers, and a tenantguard in enforce
# mode in front of it. Rows are always read back DIRECTLY on PostgreSQL.

OWNED_TABLES = ["policies", "policy_versions", "backup_sets", "backup_items", "restore_runs",
                "backup_schedules", "inventory_items", "inventory_links", "entra_groups", "findings",
                "entra_role_definitions", "tenant_permissions"]


def rwtool_path():
    return tool_path("rwtool")


def rwtool(sql, *args):
    """rewrite/'s decision for one text, as rwtool prints it (a dict)."""
    import json
    r = subprocess.run([rwtool_path(), *args], input=sql.encode(), capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"rwtool failed: {r.stderr.decode()}")
    return json.loads(r.stdout)


def render_helpers(*args):
    r = subprocess.run([rwtool_path(), "--render-helpers", *args], capture_output=True, check=True)
    return r.stdout.decode()


class EnforceDb:
    """One phase-1 database of the test cluster, with or without the helpers."""

    def __init__(self, pg, name, helpers=True):
        self.pg = pg
        self.name = name
        schema = os.path.join(REPO, "sql", "demo_schema.sql")
        pg.create_database(name, schema)
        ddl = [f"ALTER TABLE {t} ADD COLUMN workspace_id bigint NULL REFERENCES workspaces (id)"
               for t in OWNED_TABLES]
        ddl.append("CREATE UNIQUE INDEX tenants_id_workspace ON tenants (id, workspace_id)")
        pg.psql("; ".join(ddl), db=name, user="app")
        if helpers:
            self.install_helpers()

    def install_helpers(self):
        path = os.path.join(self.pg.base, f"tg_helpers_{self.name}.sql")
        with open(path, "w") as f:
            f.write(render_helpers())
        os.chmod(path, 0o644)
        self.pg.psql_file(path, db=self.name, user="app")

    def direct(self, user="app", **kw):
        """psycopg 3, autocommit, straight to PostgreSQL (unix socket)."""
        return self.pg.direct(db=self.name, user=user, **kw)

    def rows(self, sql, params=None):
        """What is stored, read on a connection of its own."""
        with self.direct() as c:
            return c.execute(sql, params).fetchall()

    def execute(self, sql):
        with self.direct() as c:
            c.execute(sql)

    def reset(self):
        """Workspaces 1, 2, 3; tenant 3 in workspace 2, 4 in 1, 5 in none, 6 in 3; no rows elsewhere."""
        with self.direct() as c:
            c.execute("TRUNCATE workspaces, tenants, audit_logs, operation_runs, "
                      + ", ".join(OWNED_TABLES) + " RESTART IDENTITY CASCADE")
            c.execute("INSERT INTO workspaces (id, name) VALUES (1, 'w1'), (2, 'w2'), (3, 'w3')")
            c.execute("INSERT INTO tenants (id, workspace_id, name) VALUES "
                      "(3, 2, 't3'), (4, 1, 't4'), (5, NULL, 't5'), (6, 3, 't6')")


def enforce_proxy(pg, workdir, mode="enforce", settings=None, extra_sections=""):
    """A started tenantguard with the default policy in `mode`."""
    s = {"mode": mode}
    s.update(settings or {})
    return Proxy(pg, workdir, s, extra_sections).start()


class Outcome:
    """What a statement did through psycopg 3's pgconn (no driver magic)."""

    def __init__(self, res):
        from psycopg import pq
        self.status = res.status
        self.ok = res.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK,
                                 pq.ExecStatus.EMPTY_QUERY)
        f = pq.DiagnosticField
        self.sqlstate = (res.error_field(f.SQLSTATE) or b"").decode() or None
        self.message = (res.error_field(f.MESSAGE_PRIMARY) or b"").decode()
        self.constraint = (res.error_field(f.CONSTRAINT_NAME) or b"").decode() or None
        self.severity = (res.error_field(f.SEVERITY_NONLOCALIZED) or b"").decode() or None
        self.rows = [[None if res.get_value(r, c) is None else res.get_value(r, c).decode()
                      for c in range(res.nfields)] for r in range(res.ntuples)]
        self.tag = (res.command_status or b"").decode()

    def __repr__(self):
        return f"Outcome(ok={self.ok}, sqlstate={self.sqlstate}, message={self.message!r}, rows={self.rows})"


def simple_all(conn, sql):
    """A simple Query through conn's pgconn: every result (one per statement run)."""
    pgc = conn.pgconn
    pgc.send_query(sql.encode())
    while pgc.flush() != 0:     # psycopg's connections are non-blocking
        time.sleep(0.001)
    out = []
    while True:
        res = pgc.get_result()
        if res is None:
            return out
        out.append(Outcome(res))


def simple(conn, sql):
    """A simple Query; the last result (the error, when there is one)."""
    res = simple_all(conn, sql)
    errs = [r for r in res if r.sqlstate]
    return errs[0] if errs else res[-1]


def extended(conn, sql, params=(), types=None, formats=None, result_format=0):
    """PQexecParams through conn's pgconn (unnamed statement, extended protocol)."""
    p = [None if v is None else (v if isinstance(v, bytes) else str(v).encode()) for v in params]
    return Outcome(conn.pgconn.exec_params(sql.encode(), p, param_types=types, param_formats=formats,
                                           result_format=result_format))

class RecordingForwarder(TcpForwarder):
    """A TcpForwarder that also records every connection as the list of chunks
    it carried, in order: ("c", bytes) from the client, ("s", bytes) from the
    server. The fuzz seeds (tests/fuzz/tools/make_seeds.py) are made from such
    recordings of real clients talking to PostgreSQL."""

    def __init__(self, target_port, target_host="127.0.0.1", listen_host="127.0.0.1"):
        self.sessions = []
        super().__init__(target_port, target_host, listen_host)

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            chunks = []
            with self.lock:
                self.pairs.append((c, s))
                self.sessions.append(chunks)
            for a, b, side in ((c, s, "c"), (s, c, "s")):
                threading.Thread(target=self._record_pump, args=(a, b, side, chunks), daemon=True).start()

    def _record_pump(self, a, b, side, chunks):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self.lock:
                    chunks.append((side, d))
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeServer:
    """A tiny stand-in for PostgreSQL on 127.0.0.1:<free port>: answers every
    startup packet with AuthenticationOk, a few ParameterStatus, BackendKeyData
    and ReadyForQuery, then answers each Query with `on_query(sql) -> bytes`
    (default: CommandComplete + ReadyForQuery); an answer of the form
    (bytes, FakeServer.CLOSE) is sent and then the connection is closed. For
    tests of what the proxy does with a broken or hostile server."""

    CLOSE = "close"


    def __init__(self, on_query=None):
        self.on_query = on_query or (lambda sql: PgWire.msg("C", b"SELECT 0\0") + PgWire.msg("Z", b"I"))
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.logins = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _recv_exact(c, n):
        b = b""
        while len(b) < n:
            d = c.recv(n - len(b))
            if not d:
                raise EOFError
            b += d
        return b

    def _serve(self, c):
        try:
            while True:
                ln, code = struct.unpack("!II", self._recv_exact(c, 8))
                self._recv_exact(c, ln - 8)
                if code == SSL_REQUEST or code == GSSENC_REQUEST:
                    c.sendall(b"N")
                    continue
                break
            self.logins += 1
            c.sendall(PgWire.msg("R", struct.pack("!I", 0)) +
                      PgWire.msg("S", b"server_version\x0015.0\0") +
                      PgWire.msg("S", b"standard_conforming_strings\0on\0") +
                      PgWire.msg("K", struct.pack("!ii", 4242, 99)) + PgWire.msg("Z", b"I"))
            while True:
                t = self._recv_exact(c, 1)
                ln = struct.unpack("!I", self._recv_exact(c, 4))[0]
                body = self._recv_exact(c, ln - 4)
                if t == b"X":
                    break
                if t == b"Q":
                    sql = body[:-1].decode("utf-8", "replace")
                    if "current_setting('search_path')" in sql:
                        # tenantguard's login probe: answer it plainly (no rows)
                        c.sendall(PgWire.msg("C", b"SELECT 0\0") + PgWire.msg("C", b"SELECT 0\0") +
                                  PgWire.msg("Z", b"I"))
                        continue
                    answer = self.on_query(sql)
                    if isinstance(answer, tuple) and answer[1] == FakeServer.CLOSE:
                        c.sendall(answer[0])
                        c.shutdown(socket.SHUT_RDWR)
                        break
                    c.sendall(answer)
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.lsock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
