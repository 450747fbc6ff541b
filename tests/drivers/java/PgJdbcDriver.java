/*
 * pgJDBC (Debian's libpostgresql-jdbc-java, /usr/share/java/postgresql.jar) through
 * tenantguard. Compiled and run by tests/integration/test_drivers_jdbc.py:
 *
 *     java -cp CLASSES:/usr/share/java/postgresql.jar PgJdbcDriver SCENARIO
 *
 * with the connection in the environment: TG_HOST, TG_PORT, TG_DB, TG_USER,
 * TG_PASSWORD, and TG_PROPS: further connection properties, "key=value;key=value"
 * (prepareThreshold, preferQueryMode, reWriteBatchedInserts, autosave, ...).
 * Prints one JSON object: what each step returned, or the error it raised
 * ({"error": {"class", "sqlstate", "message", "severity", "full", ...}}). The
 * Python test asserts on it and on the stored rows.
 *
 * One class, no nested or anonymous classes (lambdas only), no library but
 * the driver: the JSON is written by hand.
 */
import java.io.PrintStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Types;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Callable;

import org.postgresql.PGResultSetMetaData;
import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

public final class PgJdbcDriver {
    static final String INS = "INSERT INTO policies (tenant_id, name) VALUES (?, ?) RETURNING id, workspace_id";
    static final String INS_PLAIN = "INSERT INTO policies (tenant_id, name) VALUES (?, ?)";
    static final String INS_WS = "INSERT INTO policies (tenant_id, workspace_id, name) VALUES (?, ?, ?)";
    static final long[] TENANTS = {3, 4, 6};

    static long ws(long tenant) {          // the seeds' workspaces: tenant 3 in 2, 4 in 1, 6 in 3
        return tenant == 3 ? 2 : tenant == 4 ? 1 : 3;
    }

    static long wrongWs(long tenant) {
        return tenant == 4 ? 2 : 1;
    }

    private PgJdbcDriver() {
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            System.err.println("PgJdbcDriver: environment variable " + name + " is not set");
            System.exit(2);
        }
        return v;
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + env("TG_HOST") + ":" + env("TG_PORT") + "/" + env("TG_DB");
        Properties p = new Properties();
        p.setProperty("user", env("TG_USER"));
        p.setProperty("password", env("TG_PASSWORD"));
        p.setProperty("sslmode", "disable");
        String extra = System.getenv("TG_PROPS");
        if (extra != null) {
            for (String kv : extra.split(";")) {
                if (kv.isEmpty()) {
                    continue;
                }
                int eq = kv.indexOf('=');
                if (eq < 1) {
                    throw new IllegalArgumentException("TG_PROPS: not key=value: " + kv);
                }
                p.setProperty(kv.substring(0, eq), kv.substring(eq + 1));
            }
        }
        return DriverManager.getConnection(url, p);
    }

    /* ------------------------------------------------------------------ steps and values */

    /* One step: what fn returned, or the server error it raised. Anything else (a driver or
     * test bug) propagates and fails the run. */
    static Map<String, Object> step(Callable<Object> fn) {
        Map<String, Object> m = new LinkedHashMap<>();
        try {
            m.put("ok", fn.call());
        } catch (BatchUpdateException e) {
            m.put("error", batchError(e));
        } catch (SQLException e) {
            m.put("error", serverError(e));
        } catch (RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
        return m;
    }

    static Map<String, Object> serverError(SQLException e) {
        ServerErrorMessage sem = e instanceof PSQLException ? ((PSQLException) e).getServerErrorMessage() : null;
        if (sem == null) {
            throw new RuntimeException("not a server error: " + e, e);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("class", e.getClass().getSimpleName());
        m.put("sqlstate", e.getSQLState());
        m.put("message", sem.getMessage());
        m.put("severity", sem.getSeverity());
        m.put("constraint", sem.getConstraint());
        m.put("detail", sem.getDetail());
        m.put("where", sem.getWhere());
        m.put("routine", sem.getRoutine());
        m.put("full", e.getMessage());
        return m;
    }

    static Map<String, Object> batchError(BatchUpdateException e) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("class", "BatchUpdateException");
        m.put("sqlstate", e.getSQLState());
        m.put("counts", ints(e.getUpdateCounts()));
        SQLException next = e.getNextException();
        m.put("next", next == null ? null : serverError(next));
        m.put("full", e.getMessage());
        return m;
    }

    static List<Object> ints(int[] a) {
        List<Object> l = new ArrayList<>();
        if (a != null) {
            for (int x : a) {
                l.add(x);
            }
        }
        return l;
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder("\\x");
        for (byte x : b) {
            sb.append(String.format("%02x", x & 0xff));
        }
        return sb.toString();
    }

    /* A value of getObject() as JSON can hold it: int8 and int4 as numbers, numeric as its text. */
    static Object value(Object v) {
        if (v == null || v instanceof String || v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            return v;
        }
        if (v instanceof Short) {
            return ((Short) v).intValue();
        }
        if (v instanceof BigDecimal) {
            return ((BigDecimal) v).toPlainString();
        }
        if (v instanceof byte[]) {
            return hex((byte[]) v);
        }
        return v.toString();
    }

    static List<Object> rows(ResultSet rs) throws SQLException {
        try (ResultSet r = rs) {
            ResultSetMetaData md = r.getMetaData();
            List<Object> out = new ArrayList<>();
            while (r.next()) {
                Map<String, Object> row = new LinkedHashMap<>();
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    row.put(md.getColumnLabel(i), value(r.getObject(i)));
                }
                out.add(row);
            }
            return out;
        }
    }

    /* Binds Long with setLong, Integer with setInt, String with setString, null as a NULL bigint. */
    static void bind(PreparedStatement ps, Object... params) throws SQLException {
        for (int i = 0; i < params.length; i++) {
            Object p = params[i];
            if (p == null) {
                ps.setNull(i + 1, Types.BIGINT);
            } else if (p instanceof Long) {
                ps.setLong(i + 1, (Long) p);
            } else if (p instanceof Integer) {
                ps.setInt(i + 1, (Integer) p);
            } else if (p instanceof String) {
                ps.setString(i + 1, (String) p);
            } else {
                ps.setObject(i + 1, p);
            }
        }
    }

    static List<Object> query(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            bind(ps, params);
            return rows(ps.executeQuery());
        }
    }

    static int update(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            bind(ps, params);
            return ps.executeUpdate();
        }
    }

    static List<Object> run(PreparedStatement ps, Object... params) throws SQLException {
        bind(ps, params);
        return rows(ps.executeQuery());
    }

    /* The server-side statements of this session (pgJDBC's are S_1, S_2, ...). */
    static List<Object> prepared(Connection c) throws SQLException {
        List<Object> names = new ArrayList<>();
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT name FROM pg_prepared_statements ORDER BY name")) {
            while (rs.next()) {
                names.add(rs.getString(1));
            }
        }
        return names;
    }

    /* ------------------------------------------------------------------ scenarios */

    /* Ordinary queries, types and errors: compared with PostgreSQL directly. */
    static Map<String, Object> relay(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("tenants", step(() -> query(c, "SELECT id, workspace_id, name FROM tenants ORDER BY id")));
        out.put("tenants_meta", step(() -> {
            try (PreparedStatement ps = c.prepareStatement("SELECT id, workspace_id, name FROM tenants WHERE id = ?")) {
                ps.setLong(1, 3);
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData md = rs.getMetaData();
                    PGResultSetMetaData pmd = md.unwrap(PGResultSetMetaData.class);
                    List<Object> cols = new ArrayList<>();
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        // isNullable and getBaseTableName ask the catalog: queries of pgJDBC's own
                        cols.add(Arrays.asList(md.getColumnName(i), md.getColumnTypeName(i), md.getColumnType(i),
                                               md.isNullable(i), pmd.getBaseTableName(i)));
                    }
                    return cols;
                }
            }
        }));
        // one PreparedStatement run past prepareThreshold: unnamed, then S_1 with binary results
        String types = "SELECT ?::int8 AS big, ?::numeric AS num, ?::text AS t, ?::timestamptz AS ts, "
                       + "?::bytea AS bin, ?::jsonb AS j, NULL::int AS n, true AS b";
        List<Object> runs = new ArrayList<>();
        List<Object> meta = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(types)) {
            for (int k = 0; k < 7; k++) {
                runs.add(step(() -> {
                    ps.setLong(1, 9007199254740993L);
                    ps.setBigDecimal(2, new BigDecimal("12345678901234567890.0123"));
                    ps.setString(3, "it's é ☃");
                    ps.setObject(4, OffsetDateTime.parse("2024-02-29T12:34:56.789+01:00"));
                    ps.setBytes(5, new byte[] {0, 1, 2, (byte) 0xff, 0x27});
                    ps.setString(6, "{\"a\": [1, 2]}");
                    try (ResultSet rs = ps.executeQuery()) {
                        List<Object> all = new ArrayList<>();
                        while (rs.next()) {
                            Map<String, Object> r = new LinkedHashMap<>();
                            r.put("big", rs.getLong("big"));
                            r.put("num", rs.getBigDecimal("num").toPlainString());
                            r.put("t", rs.getString("t"));
                            r.put("ts", rs.getObject("ts", OffsetDateTime.class).toString());
                            r.put("bin", hex(rs.getBytes("bin")));
                            r.put("j", rs.getString("j"));
                            r.put("n", rs.getObject("n"));
                            r.put("n_null", rs.wasNull());
                            r.put("b", rs.getBoolean("b"));
                            List<Object> classes = new ArrayList<>();
                            for (String col : new String[] {"big", "num", "t", "ts", "bin", "j", "b"}) {
                                classes.add(rs.getObject(col).getClass().getName());
                            }
                            r.put("classes", classes);
                            all.add(r);
                        }
                        if (meta.isEmpty()) {
                            ResultSetMetaData md = rs.getMetaData();
                            for (int i = 1; i <= md.getColumnCount(); i++) {
                                meta.add(Arrays.asList(md.getColumnLabel(i), md.getColumnType(i),
                                                       md.getColumnTypeName(i)));
                            }
                        }
                        return all;
                    }
                }));
            }
        }
        out.put("types", runs);
        out.put("types_meta", meta);
        out.put("prepared", step(() -> prepared(c)));
        out.put("columns", step(() -> {
            // DatabaseMetaData, as ORMs introspect a table: pgJDBC's catalog queries
            DatabaseMetaData dm = c.getMetaData();
            List<Object> cols = new ArrayList<>();
            try (ResultSet rs = dm.getColumns(null, "public", "tenants", "%")) {
                while (rs.next()) {
                    cols.add(Arrays.asList(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"),
                                           rs.getInt("DATA_TYPE"), rs.getString("IS_NULLABLE")));
                }
            }
            return cols;
        }));
        out.put("series", step(() -> query(c, "SELECT g FROM generate_series(1, ?) g", 5)));
        // observe mode runs exactly what was sent: no workspace is injected
        out.put("insert", step(() -> query(c, "INSERT INTO policies (tenant_id, name) VALUES (?, ?) "
                                              + "RETURNING tenant_id, workspace_id, name", 3L, "relay-row")));
        out.put("error", step(() -> query(c, "SELECT 1 / ? AS x", 0)));
        out.put("missing", step(() -> {
            try (Statement st = c.createStatement()) {
                return rows(st.executeQuery("SELECT * FROM no_such_table"));
            }
        }));
        out.put("autocommit_off", step(() -> {
            c.setAutoCommit(false);
            return c.getAutoCommit();
        }));
        out.put("in_tx_error", step(() -> query(c, "SELECT 1 / 0 AS x")));
        out.put("in_tx_aborted", step(() -> query(c, "SELECT 1 AS x")));
        out.put("rollback", step(() -> {
            c.rollback();
            c.setAutoCommit(true);
            return true;
        }));
        out.put("deleted", step(() -> update(c, "DELETE FROM policies WHERE name = ?", "relay-row")));
        return out;
    }

    /* R1 under the query mode of TG_PROPS: one PreparedStatement reused past prepareThreshold,
     * executeUpdate, generated keys, a plain Statement, and an R2 rejection in between. */
    static Map<String, Object> modes(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        List<Object> returning = new ArrayList<>();
        try (PreparedStatement ins = c.prepareStatement(INS)) {
            for (int i = 0; i < 8; i++) {
                long t = TENANTS[i % 3];
                String name = "m-" + i;
                returning.add(step(() -> run(ins, t, name)));
            }
            out.put("returning", returning);
            out.put("prepared_after_loop", step(() -> prepared(c)));
            try (PreparedStatement bad = c.prepareStatement(INS_WS)) {
                out.put("mismatch", step(() -> {
                    bind(bad, 3L, 1L, "m-bad");
                    return bad.executeUpdate();
                }));
            }
            // the same reused statement after the rejection
            out.put("after", step(() -> run(ins, 6L, "m-after")));
        }
        // int4 parameter for the bigint tenant_id, no RETURNING
        out.put("set_int", step(() -> update(c, INS_PLAIN, 4, "m-int")));
        // setString: a varchar parameter (PostgreSQL refuses it for bigint), unless stringtype=unspecified
        out.put("set_string", step(() -> update(c, INS_PLAIN, "4", "m-string")));
        // generated keys: pgJDBC appends RETURNING "id", "workspace_id" itself
        out.put("generated", step(() -> {
            try (PreparedStatement ps = c.prepareStatement(INS_PLAIN, new String[] {"id", "workspace_id"})) {
                bind(ps, 6L, "m-keys");
                int n = ps.executeUpdate();
                return Arrays.asList(n, rows(ps.getGeneratedKeys()));
            }
        }));
        // a Statement with literals (simple protocol under preferQueryMode=simple and extendedForPrepared)
        out.put("statement", step(() -> {
            try (Statement st = c.createStatement()) {
                return st.executeUpdate("INSERT INTO policies (tenant_id, name) VALUES (3, 'm-literal')");
            }
        }));
        out.put("prepared", step(() -> prepared(c)));
        return out;
    }

    /* R2 and R4 with PreparedStatements and a Statement, autoCommit on: the connection goes on. */
    static Map<String, Object> rules(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        List<Object> inserted = new ArrayList<>();
        for (long t : TENANTS) {
            inserted.add(step(() -> query(c, INS, t, "r-" + t)));
        }
        out.put("inserted", inserted);
        out.put("mismatch", step(() -> update(c, INS_WS, 3L, 1L, "r-bad")));
        out.put("after_mismatch", step(() -> query(c, INS, 6L, "r-after")));
        out.put("null_workspace", step(() -> update(c, INS_WS, 4L, null, "r-null")));
        out.put("mismatch_literal", step(() -> {
            try (Statement st = c.createStatement()) {
                return st.executeUpdate("INSERT INTO policies (tenant_id, workspace_id, name) VALUES (6, 2, 'r-bad')");
            }
        }));
        out.put("explicit_ok", step(() -> update(c, INS_WS, 4L, 1L, "r-explicit")));
        out.put("change_tenant", step(() -> update(c, "UPDATE policies SET tenant_id = ? WHERE name = ?", 4L, "r-3")));
        out.put("change_tenant_literal", step(() -> {
            try (Statement st = c.createStatement()) {
                return st.executeUpdate("UPDATE policies SET tenant_id = 3 WHERE name = 'r-6'");
            }
        }));
        out.put("same_tenant", step(() -> update(c, "UPDATE policies SET tenant_id = ?, name = ? WHERE name = ?",
                                                 6L, "r-6-renamed", "r-6")));
        out.put("other_column", step(() -> update(c, "UPDATE policies SET policy_type = ? WHERE tenant_id = ?",
                                                  "compliance", 3L)));
        out.put("count", step(() -> query(c, "SELECT count(*) AS c FROM policies")));
        // a control: a PL/pgSQL error of the client's own keeps its CONTEXT ("Where: ...")
        out.put("own_plpgsql", step(() -> {
            try (Statement st = c.createStatement()) {
                return st.executeUpdate("DO $$ BEGIN RAISE EXCEPTION 'own error' USING ERRCODE = '42501'; END $$");
            }
        }));
        return out;
    }

    /* autoCommit off: a rejection aborts the transaction until rollback(); a savepoint recovers. */
    static Map<String, Object> transaction(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        c.setAutoCommit(false);
        out.put("ok", step(() -> query(c, INS, 3L, "tx-doomed")));
        out.put("rejected", step(() -> update(c, INS_WS, 4L, 2L, "tx-bad")));
        out.put("next_prepared", step(() -> query(c, INS, 4L, "tx-aborted")));
        out.put("next_statement", step(() -> {
            try (Statement st = c.createStatement()) {
                return rows(st.executeQuery("SELECT 1 AS one"));
            }
        }));
        out.put("rollback", step(() -> {
            c.rollback();
            return true;
        }));
        out.put("after", step(() -> query(c, INS, 6L, "tx-after-rollback")));
        out.put("commit", step(() -> {
            c.commit();
            return true;
        }));
        out.put("outer", step(() -> query(c, INS, 4L, "tx-outer")));
        Savepoint[] sp = new Savepoint[1];
        out.put("savepoint", step(() -> {
            sp[0] = c.setSavepoint("sp1");
            return sp[0].getSavepointName();
        }));
        out.put("sp_rejected", step(() -> update(c, "UPDATE policies SET tenant_id = ? WHERE name = ?", 3L, "tx-outer")));
        out.put("sp_aborted", step(() -> query(c, INS, 3L, "tx-sp-aborted")));
        out.put("rollback_to", step(() -> {
            c.rollback(sp[0]);
            return true;
        }));
        out.put("good", step(() -> Arrays.asList(query(c, INS, 3L, "tx-good-1"),
                                                 update(c, INS_WS, 6L, 3L, "tx-good-2"),
                                                 query(c, INS, 4L, "tx-good-3"))));
        out.put("commit2", step(() -> {
            c.commit();
            return true;
        }));
        return out;
    }

    /* autosave=always: pgJDBC wraps each statement in SAVEPOINT PGJDBC_AUTOSAVE and rolls back to
     * it on an error, so a rejection costs that statement only. */
    static Map<String, Object> autosave(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        c.setAutoCommit(false);
        out.put("ok", step(() -> query(c, INS, 3L, "as-1")));
        out.put("rejected", step(() -> update(c, INS_WS, 4L, 2L, "as-bad")));
        out.put("next", step(() -> query(c, INS, 4L, "as-2")));
        out.put("rejected_r4", step(() -> update(c, "UPDATE policies SET tenant_id = ? WHERE name = ?", 6L, "as-1")));
        out.put("next2", step(() -> query(c, INS, 6L, "as-3")));
        out.put("commit", step(() -> {
            c.commit();
            return true;
        }));
        return out;
    }

    /* addBatch/executeBatch (pipelined; rewritten into multi-row VALUES with reWriteBatchedInserts). */
    static Map<String, Object> batch(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        int n = Integer.parseInt(System.getenv().getOrDefault("TG_ROWS", "600"));
        out.put("counts", step(() -> {
            try (PreparedStatement ps = c.prepareStatement(INS_PLAIN)) {
                for (int i = 0; i < n; i++) {
                    bind(ps, TENANTS[i % 3], "b-" + i);
                    ps.addBatch();
                }
                return ints(ps.executeBatch());
            }
        }));
        out.put("keys", step(() -> {
            try (PreparedStatement ps = c.prepareStatement(INS_PLAIN, new String[] {"workspace_id"})) {
                for (int i = 0; i < 10; i++) {
                    bind(ps, TENANTS[(i + 1) % 3], "k-" + i);
                    ps.addBatch();
                }
                ps.executeBatch();
                return rows(ps.getGeneratedKeys());
            }
        }));
        out.put("explicit", step(() -> {
            try (PreparedStatement ps = c.prepareStatement(INS_WS)) {
                for (int i = 0; i < 6; i++) {
                    long t = TENANTS[(i + 2) % 3];
                    bind(ps, t, ws(t), "e-" + i);
                    ps.addBatch();
                }
                return ints(ps.executeBatch());
            }
        }));
        out.put("statement", step(() -> {
            try (Statement st = c.createStatement()) {
                for (long t : TENANTS) {
                    st.addBatch("INSERT INTO policies (tenant_id, name) VALUES (" + t + ", 's-" + t + "')");
                }
                return ints(st.executeBatch());
            }
        }));
        out.put("prepared", step(() -> prepared(c)));
        return out;
    }

    /* A batch of TG_ROWS rows with explicit workspaces, one of them bad (TG_BAD: r2, a wrong workspace;
     * fk, a tenant that does not exist), with autoCommit off (then rollback) and on; then a good batch. */
    static Map<String, Object> batchError(Connection c) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        int n = Integer.parseInt(System.getenv().getOrDefault("TG_ROWS", "20"));
        String bad = env("TG_BAD");
        for (boolean autoCommit : new boolean[] {false, true}) {
            String tag = autoCommit ? "autocommit" : "transaction";
            c.setAutoCommit(autoCommit);
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("batch", step(() -> {
                try (PreparedStatement ps = c.prepareStatement(INS_WS)) {
                    for (int i = 0; i < n; i++) {
                        long t = TENANTS[i % 3];
                        long w = ws(t);
                        if (i == n / 2) {
                            if (bad.equals("r2")) {
                                w = wrongWs(t);
                            } else {
                                t = 999;
                            }
                        }
                        bind(ps, t, w, tag + "-" + i);
                        ps.addBatch();
                    }
                    return ints(ps.executeBatch());
                }
            }));
            if (!autoCommit) {
                r.put("aborted", step(() -> query(c, "SELECT 1 AS one")));
                r.put("rollback", step(() -> {
                    c.rollback();
                    return true;
                }));
            }
            r.put("stored", step(() -> query(c, "SELECT count(*) AS c FROM policies WHERE name LIKE ?", tag + "-%")));
            r.put("good", step(() -> {
                try (PreparedStatement ps = c.prepareStatement(INS_WS)) {
                    for (int i = 0; i < 3; i++) {
                        long t = TENANTS[i];
                        bind(ps, t, ws(t), tag + "-good-" + i);
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    if (!autoCommit) {
                        c.commit();
                    }
                    return ints(counts);
                }
            }));
            out.put(tag, r);
        }
        return out;
    }

    /* ------------------------------------------------------------------ JSON */

    static void json(StringBuilder sb, Object v, String indent) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof String) {
            String s = (String) v;
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char ch = s.charAt(i);
                switch (ch) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (ch < 0x20) {
                            sb.append(String.format("\\u%04x", (int) ch));
                        } else {
                            sb.append(ch);
                        }
                }
            }
            sb.append('"');
        } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            sb.append(v);
        } else if (v instanceof Map) {
            String in = indent + " ";
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                sb.append(first ? "\n" : ",\n").append(in);
                first = false;
                json(sb, e.getKey().toString(), in);
                sb.append(": ");
                json(sb, e.getValue(), in);
            }
            sb.append(first ? "}" : "\n" + indent + "}");
        } else if (v instanceof List) {
            String in = indent + " ";
            sb.append('[');
            boolean first = true;
            for (Object x : (List<?>) v) {
                sb.append(first ? "\n" : ",\n").append(in);
                first = false;
                json(sb, x, in);
            }
            sb.append(first ? "]" : "\n" + indent + "]");
        } else {
            throw new IllegalArgumentException("no JSON for " + v.getClass().getName());
        }
    }

    public static void main(String[] args) throws Exception {
        String scenario = args.length == 1 ? args[0] : "";
        Map<String, Object> result;
        try (Connection c = connect()) {
            switch (scenario) {
                case "relay": result = relay(c); break;
                case "modes": result = modes(c); break;
                case "rules": result = rules(c); break;
                case "transaction": result = transaction(c); break;
                case "autosave": result = autosave(c); break;
                case "batch": result = batch(c); break;
                case "batch_error": result = batchError(c); break;
                default:
                    System.err.println("usage: PgJdbcDriver relay|modes|rules|transaction|autosave|batch|batch_error");
                    System.exit(2);
                    return;
            }
        }
        StringBuilder sb = new StringBuilder();
        json(sb, result, "");
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        out.println(sb);
    }
}
