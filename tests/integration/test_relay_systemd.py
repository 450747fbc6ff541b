"""Running under systemd (Type=notify): the sd_notify messages the daemon
sends, read from a datagram socket standing in for the service manager."""
import os
import signal
import socket
import time

import pytest

import tgtest
from test_admin_common import connect, console_proxy, ok


class Manager:
    """The service manager's end of NOTIFY_SOCKET: every datagram, in order."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.path = path
        self.messages = []

    def _drain(self):
        while True:
            try:
                self.messages.append(dict(line.split("=", 1) for line in
                                          self.sock.recv(4096).decode().splitlines() if "=" in line))
            except (socket.timeout, BlockingIOError):
                return

    def wait_for(self, key, value=None, after=0, timeout=15):
        """Index of the first message from `after` on that sets key (to value)."""
        def found():
            self._drain()
            for i in range(after, len(self.messages)):
                if key in self.messages[i] and (value is None or self.messages[i][key] == value):
                    return i + 1    # 1-based so that message 0 is truthy
            return None
        return tgtest.wait_until(found, timeout, interval=0.02, what=f"{key}={value} from the daemon") - 1

    def close(self):
        self.sock.close()


@pytest.fixture
def manager(workdir):
    m = Manager(os.path.join(workdir, "notify.sock"))
    yield m
    m.close()


def test_ready_status_reload_and_stopping(proxy_factory, workdir, manager):
    p = console_proxy(proxy_factory, workdir, start=False)
    p.env = {"NOTIFY_SOCKET": manager.path}
    p.start(wait=False)
    ready = manager.wait_for("READY", "1")
    # READY=1 comes once the daemon accepts: the port is open at that moment
    assert tgtest.port_open(p.port) and tgtest.port_open(p.admin_port)
    first = manager.messages[ready]
    assert first["MAINPID"] == str(p.proc.pid)
    assert first["STATUS"].startswith("running, mode observe, 0 client(s), server 127.0.0.1:")
    # a client shows in the status line within the janitor's second
    with p.connect() as app:
        assert app.execute("SELECT 1").fetchone() == (1,)
        manager.wait_for("STATUS", after=ready + 1, timeout=5)
        assert any(m.get("STATUS", "").startswith("running, mode observe, 1 client(s)")
                   for m in manager.messages[ready + 1:])
    # SIGHUP: RELOADING=1 (with the monotonic time Type=notify-reload matches), then READY=1 and the new mode
    p.write_config({"mode": "enforce"})
    mark = len(manager.messages)
    p.proc.send_signal(signal.SIGHUP)
    reloading = manager.wait_for("RELOADING", "1", after=mark)
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now_us - int(manager.messages[reloading]["MONOTONIC_USEC"]) < 30_000_000
    again = manager.wait_for("READY", "1", after=reloading + 1)
    manager.wait_for("STATUS", after=again)
    assert any("mode enforce" in m.get("STATUS", "") for m in manager.messages[again:])
    # a console RELOAD says the same
    mark = len(manager.messages)
    with connect(p) as c:
        ok(c, "RELOAD")
    manager.wait_for("READY", "1", after=manager.wait_for("RELOADING", "1", after=mark) + 1)
    # SIGTERM: STOPPING=1 before the daemon exits
    mark = len(manager.messages)
    p.proc.send_signal(signal.SIGTERM)
    stopping = manager.wait_for("STOPPING", "1", after=mark)
    assert manager.messages[stopping]["STATUS"] == "stopping: draining sessions"
    assert p.proc.wait(timeout=15) == 0


def test_watchdog_pings_from_the_event_loop(proxy_factory, workdir, manager):
    """WatchdogSec=0.4: a WATCHDOG=1 every ~0.2 s while the loop runs, none once it is stopped."""
    p = proxy_factory(start=False)
    p.env = {"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "400000"}
    p.start()
    start = manager.wait_for("READY", "1")
    i = start
    for _ in range(5):
        i = manager.wait_for("WATCHDOG", "1", after=i + 1, timeout=3)
    # the loop stopped (SIGSTOP): no ping while it is, pings again after SIGCONT
    p.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.3)     # let a ping already in flight arrive; then none may come
        manager._drain()
        mark = len(manager.messages)
        time.sleep(1.0)     # five intervals without a ping are what a service manager acts on
        manager._drain()
        assert manager.messages[mark:] == []
    finally:
        p.proc.send_signal(signal.SIGCONT)
    manager.wait_for("WATCHDOG", "1", after=mark, timeout=3)


def test_watchdog_of_another_pid_is_not_ours(proxy_factory, workdir, manager):
    """WATCHDOG_PID names another process (the variable leaked to a child): no pings."""
    p = proxy_factory(start=False)
    p.env = {"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    p.start()
    manager.wait_for("READY", "1")
    time.sleep(1.0)     # five watchdog intervals
    manager._drain()
    assert not any("WATCHDOG" in m for m in manager.messages)


def test_no_notify_socket_no_messages(proxy, manager):
    """Started by anything else, the daemon sends nothing (and runs as ever)."""
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    manager._drain()
    assert manager.messages == []


# ---------------------------------------------------------------- socket activation

def test_socket_activation_takes_the_passed_socket(proxy_factory, workdir):
    """systemd-socket-activate (systemd's own test tool) opens the port and passes it as fd 3:
    the daemon serves it, and does not open listen_port itself."""
    activated = tgtest.free_port()
    p = proxy_factory(start=False)
    configured = p.port
    p.argv_prefix = ["systemd-socket-activate", "-l", f"127.0.0.1:{activated}"]
    p.port = activated
    p.start()
    with p.connect() as c:
        assert c.execute("SELECT inet_server_port() IS NOT NULL").fetchone() == (True,)
    p.wait_log(f"listening on 127.0.0.1:{activated} (socket from the service manager)")
    assert "socket activation: listen_addr, listen_port and unix_socket_dir are not used" in p.log()
    assert not tgtest.port_open(configured)


def _accept_queue(port):
    """Connections waiting in the accept queue of the listener on 127.0.0.1:port (for a
    listening socket, /proc/net/tcp's rx_queue is that count)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want and cols[3] == "0A":
                return int(cols[4].split(":")[1], 16)
    return -1


def _activated(proxy_factory, lsock):
    """A daemon given lsock as fd 3, the way a service manager passes it."""
    p = proxy_factory(start=False)
    p.argv_prefix = ["bash", "-c", f'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@" 3<&{lsock.fileno()}']
    p.pass_fds = (lsock.fileno(),)
    p.port = lsock.getsockname()[1]
    return p


def test_a_restart_keeps_clients_waiting_not_refused(proxy_factory, workdir):
    """The service manager keeps the socket while the daemon restarts: a client that connects
    in between waits in the backlog and is served by the next daemon."""
    import threading
    import psycopg
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    try:
        first = _activated(proxy_factory, lsock)
        first.start()
        with first.connect() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert first.stop() == 0
        result = {}

        def client():
            try:
                with psycopg.connect(first.dsn(connect_timeout=30), autocommit=True) as c:
                    result["value"] = c.execute("SELECT 42").fetchone()[0]
            except Exception as e:   # noqa: BLE001 -- reported below
                result["error"] = e
        t = threading.Thread(target=client)
        t.start()
        # nobody accepts now: the client is not refused, it waits
        tgtest.wait_until(lambda: _accept_queue(first.port) >= 1, 10, what="the client in the accept queue")
        assert t.is_alive() and not result
        second = _activated(proxy_factory, lsock)
        second.start()
        t.join(30)
        assert result == {"value": 42}
    finally:
        lsock.close()


def test_a_passed_socket_that_does_not_listen_fails_the_start(proxy_factory, workdir):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))    # bound, never listen()ed
    try:
        p = _activated(proxy_factory, s)
        p.start(wait=False)
        assert p.wait_exit() == 1
        assert f"socket activation: fd 3 (127.0.0.1:{s.getsockname()[1]}) is not a listening stream socket" \
            in p.log()
    finally:
        s.close()
