"""Asynchronous server messages through tenantguard: NotificationResponse (LISTEN/
NOTIFY across sessions, delivered while the listener is idle), NoticeResponse and
ParameterStatus."""
import select

import psycopg
import psycopg2
import psycopg2.extensions

import tgtest
from tgtest import PgWire


def test_listen_notify_across_two_sessions(proxy):
    """The listener is idle (no request in flight) when the notification comes:
    the proxy must relay it at once. The pid is the sender's pg_backend_pid()."""
    listener = psycopg2.connect(proxy.dsn())
    listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    try:
        listener.cursor().execute("LISTEN tg_channel")
        with proxy.connect() as sender:
            sender_pid = sender.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert sender.info.backend_pid == sender_pid   # BackendKeyData carries the real pid
            sender.execute("NOTIFY tg_channel, 'payload with spaces ✓'")
            sender.execute("SELECT pg_notify('tg_channel', %s)", ("x" * 7000,))

            got = []
            def poll():
                if select.select([listener], [], [], 0.2)[0]:
                    listener.poll()
                while listener.notifies:
                    got.append(listener.notifies.pop(0))
                return len(got) >= 2
            tgtest.wait_until(poll, 10, what="two notifications")
        assert [(n.channel, n.payload, n.pid) for n in got] == [
            ("tg_channel", "payload with spaces ✓", sender_pid),
            ("tg_channel", "x" * 7000, sender_pid)]
    finally:
        listener.close()


def test_notify_inside_a_transaction_is_delivered_at_commit(proxy):
    with proxy.wire() as w, proxy.connect(autocommit=False) as sender:
        w.login("trust_user", "app")
        w.query("LISTEN tg_tx")
        sender.execute("NOTIFY tg_tx, 'one'")
        sender.execute("NOTIFY tg_tx, 'two'")
        w.sock.settimeout(0.5)
        try:
            early = w.read_msg()
        except OSError:
            early = None
        assert early is None, "notification delivered before COMMIT"
        sender_pid = sender.info.backend_pid
        sender.commit()
        w.sock.settimeout(10)
        msgs = [w.read_msg(), w.read_msg()]
        assert [t for t, _ in msgs] == ["A", "A"]
        import struct
        pids = [struct.unpack("!i", p[:4])[0] for _, p in msgs]
        assert pids == [sender_pid, sender_pid]
        assert [p[4:] for _, p in msgs] == [b"tg_tx\0one\0", b"tg_tx\0two\0"]


def test_self_notify_psycopg3(proxy):
    with proxy.connect() as c:
        got = []
        c.add_notify_handler(got.append)
        c.execute("LISTEN me")
        c.execute("NOTIFY me, 'self'")
        c.execute("SELECT 1")
        assert [(n.channel, n.payload, n.pid) for n in got] == [("me", "self", c.info.backend_pid)]


def test_notices_reach_the_client(proxy):
    with proxy.connect() as c:
        notices = []
        # A Diagnostic is only valid inside the handler: copy its fields.
        c.add_notice_handler(lambda d: notices.append(
            (d.severity, d.sqlstate, d.message_primary, d.message_detail, d.message_hint)))
        c.execute("""DO $$BEGIN
            RAISE NOTICE 'hello %', 42;
            RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint';
            RAISE NOTICE USING MESSAGE = repeat('long ', 5000);
        END$$""")
        assert notices == [("NOTICE", "00000", "hello 42", None, None),
                           ("WARNING", "01000", "careful", "some detail", "a hint"),
                           ("NOTICE", "00000", "long " * 5000, None, None)]
        c.execute("SET client_min_messages = warning")
        notices.clear()
        c.execute("DO $$BEGIN RAISE NOTICE 'hidden'; RAISE WARNING 'shown'; END$$")
        assert [n[2] for n in notices] == ["shown"]


def test_parameter_status_changes_reach_the_client(pg, proxy):
    with proxy.connect() as c:
        assert c.info.parameter_status("application_name") == ""
        c.execute("SET application_name = 'tg_param_test'")
        assert c.info.parameter_status("application_name") == "tg_param_test"
        c.execute("SET TimeZone = 'America/New_York'")
        assert c.info.parameter_status("TimeZone") == "America/New_York"
        c.execute("SET DateStyle = 'German'")
        assert c.info.parameter_status("DateStyle") == "German, DMY"
        c.execute("SET intervalstyle = 'iso_8601'")
        assert c.info.parameter_status("IntervalStyle") == "iso_8601"
        c.execute("RESET ALL")
        assert c.info.parameter_status("TimeZone") == pg.psql("SHOW TimeZone")


def test_initial_parameter_status_equals_direct(pg, proxy):
    names = ["server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle",
             "TimeZone", "integer_datetimes", "standard_conforming_strings", "is_superuser",
             "session_authorization", "application_name", "default_transaction_read_only",
             "in_hot_standby"]
    with PgWire(proxy.port) as a, PgWire(pg.port) as b:
        a.login("trust_user", "app", application_name="tg_same")
        b.login("trust_user", "app", application_name="tg_same")
        assert a.params == b.params
        assert set(names) <= set(a.params)


def test_session_state_survives_many_round_trips(proxy):
    """SET, temp tables, prepared statements: all live in the one server session."""
    with proxy.connect() as c:
        c.execute("SET search_path = pg_temp, public")
        c.execute("CREATE TEMP TABLE st (a int)")
        c.execute("PREPARE ins(int) AS INSERT INTO st VALUES ($1)")
        for i in range(200):
            c.execute("EXECUTE ins(%s)" % i)
        assert c.execute("SELECT count(*), sum(a) FROM st").fetchone() == (200, sum(range(200)))
        assert c.execute("SHOW search_path").fetchone()[0] == "pg_temp, public"


def test_raw_notification_while_idle(proxy):
    """Raw socket: a listener that sends nothing gets the 'A' message on its own."""
    with proxy.wire() as w, psycopg.connect(proxy.dsn(), autocommit=True) as sender:
        w.login("trust_user", "app")
        w.query("LISTEN raw_chan")
        sender.execute("NOTIFY raw_chan, 'to an idle listener'")
        t, p = w.read_msg()
        assert t == "A"
        assert p[4:] == b"raw_chan\0to an idle listener\0"
