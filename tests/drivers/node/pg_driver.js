'use strict';
/*
 * node-postgres (`pg`, pinned in package.json) through tenantguard. Run by
 * tests/integration/test_drivers_node.py:
 *
 *     node pg_driver.js SCENARIO
 *
 * with the connection in the environment: TG_HOST, TG_PORT, TG_DB, TG_USER,
 * TG_PASSWORD. Prints one JSON object: what each step returned, or the error
 * it raised ({"error": {"code", "message", "severity"}}). The Python test
 * asserts on it and on the stored rows. pg's defaults are kept: int8 and
 * numeric values arrive as strings.
 */
const { Client, Pool } = require('pg');

function env(name) {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`pg_driver.js: environment variable ${name} is not set\n`);
    process.exit(2);
  }
  return v;
}

const config = {
  host: env('TG_HOST'),
  port: Number(env('TG_PORT')),
  database: env('TG_DB'),
  user: env('TG_USER'),
  password: env('TG_PASSWORD'),
  ssl: false,
};

/* One step: its rows (or what `pick` takes of the result), or the error it raised. */
async function step(fn, pick = (r) => r.rows) {
  try {
    return { ok: pick(await fn()) };
  } catch (e) {
    if (e && e.code && e.severity) {
      return { error: { code: e.code, message: e.message, severity: e.severity } };
    }
    throw e;   // not a server error: a driver or test bug, fail loudly
  }
}

const INS = 'INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING id, workspace_id';
const INS_WS = 'INSERT INTO policies (tenant_id, workspace_id, name) VALUES ($1, $2, $3) RETURNING id, workspace_id';
const TENANTS = [3, 4, 6];

/* ------------------------------------------------------------------ scenarios */

/* Ordinary queries, compared with PostgreSQL directly. */
async function relay(c) {
  const out = {};
  out.tenants = await step(() => c.query('SELECT id, workspace_id, name FROM tenants ORDER BY id'));
  out.types = await step(() => c.query(
    "SELECT $1::int + 1 AS sum, $2::text AS t, NULL::int AS n, true AS b, 1.50::numeric(4,2) AS num, " +
    "'{\"a\": [1, 2]}'::jsonb AS j, 'é ☃'::text AS u, $3::int8 AS big, '2024-02-29'::date::text AS d",
    [41, "it's", '9007199254740993']));
  out.fields = await step(() => c.query('SELECT 1::int4 AS a, 2::int8 AS b, $1::text AS c', ['x']),
                          (r) => r.fields.map((f) => [f.name, f.dataTypeID]));
  out.series = await step(() => c.query({ text: 'SELECT g FROM generate_series(1, $1) g', values: [5],
                                          rowMode: 'array' }));
  out.named = [];
  for (const v of [5, 7]) {
    out.named.push(await step(() => c.query({ name: 'times_ten', text: 'SELECT $1::int * 10 AS v', values: [v] })));
  }
  // observe mode runs exactly what was sent: no workspace is injected
  out.insert = await step(() => c.query(
    'INSERT INTO policies (tenant_id, name) VALUES ($1, $2) RETURNING tenant_id, workspace_id, name', [3, 'relay-row']));
  out.simple_multi = await step(() => c.query("SELECT 1 AS one; SELECT 'two' AS two"),
                                (r) => r.map((x) => x.rows));
  out.error = await step(() => c.query('SELECT 1 / $1::int AS x', [0]));
  out.missing = await step(() => c.query('SELECT * FROM no_such_table'));
  out.begin = await step(() => c.query('BEGIN'), (r) => r.command);
  out.in_tx_error = await step(() => c.query('SELECT 1 / 0'));
  out.in_tx_aborted = await step(() => c.query('SELECT 1'));
  out.rollback = await step(() => c.query('ROLLBACK'), (r) => r.command);
  out.deleted = await step(() => c.query('DELETE FROM policies WHERE name = $1', ['relay-row']),
                           (r) => [r.command, r.rowCount]);
  return out;
}

/* 1: unnamed extended protocol with $n parameters. */
async function unnamed(c) {
  const out = {};
  out.inserted = [];
  for (const t of TENANTS) {
    out.inserted.push(await step(() => c.query(INS, [t, `un-${t}`])));
  }
  out.string_tenant = await step(() => c.query(INS, ['4', 'un-str']));
  out.multi_row = await step(() => c.query(
    'INSERT INTO policies (tenant_id, name) VALUES ($1, $2), ($3, $4) RETURNING id, workspace_id',
    [6, 'multi-a', 3, 'multi-b']));
  out.mismatch = await step(() => c.query(INS_WS, [3, 1, 'bad']));
  out.after = await step(() => c.query(INS, [6, 'after-mismatch']));
  out.explicit_ok = await step(() => c.query(INS_WS, [4, 1, 'explicit-ok']));
  out.change_tenant = await step(() => c.query('UPDATE policies SET tenant_id = $1 WHERE name = $2', [4, 'un-3']),
                                 (r) => r.rowCount);
  out.same_tenant = await step(() => c.query('UPDATE policies SET tenant_id = $1, name = $2 WHERE name = $3',
                                             [6, 'un-6-renamed', 'un-6']), (r) => r.rowCount);
  out.count = await step(() => c.query('SELECT count(*)::int AS c FROM policies'));
  return out;
}

/* 2: named prepared statements reused, around rejections. */
async function named(c) {
  const out = { first: [], second: [] };
  const ins = (t, name) => c.query({ name: 'ins', text: INS, values: [t, name] });
  const insWs = (t, w, name) => c.query({ name: 'ins_ws', text: INS_WS, values: [t, w, name] });
  for (let i = 0; i < 30; i++) {
    out.first.push(await step(() => ins(TENANTS[i % 3], `first-${i}`)));
  }
  out.ws_ok = await step(() => insWs(6, 3, 'ws-ok'));
  out.ws_bad = await step(() => insWs(3, 1, 'ws-bad'));
  out.ws_again = await step(() => insWs(3, 2, 'ws-again'));
  // a Parse that the proxy refuses (no tenant to derive the workspace from), tried twice
  out.refused = await step(() => c.query({ name: 'no_tenant', text: 'INSERT INTO policies (name) VALUES ($1)',
                                           values: ['none'] }));
  out.refused_again = await step(() => c.query({ name: 'no_tenant', text: 'INSERT INTO policies (name) VALUES ($1)',
                                                 values: ['none'] }));
  for (let i = 0; i < 30; i++) {
    out.second.push(await step(() => ins(TENANTS[(i + 1) % 3], `second-${i}`)));
  }
  out.statements = await step(() => c.query('SELECT name FROM pg_prepared_statements ORDER BY name'));
  return out;
}

/* 3: a rejected statement aborts the transaction, as a server error does. */
async function transaction(c) {
  const out = {};
  out.begin = await step(() => c.query('BEGIN'), (r) => r.command);
  out.ok = await step(() => c.query(INS, [3, 'tx-doomed']));
  out.rejected = await step(() => c.query(INS_WS, [4, 2, 'tx-bad']));
  out.next_unnamed = await step(() => c.query(INS, [4, 'tx-aborted']));
  out.next_named = await step(() => c.query({ name: 'tx_ins', text: INS, values: [6, 'tx-aborted'] }));
  out.next_simple = await step(() => c.query('SELECT 1'));
  out.rollback = await step(() => c.query('ROLLBACK'), (r) => r.command);
  out.after = await step(() => c.query({ name: 'tx_ins', text: INS, values: [6, 'after-rollback'] }));
  // the same inside a savepoint: the outer transaction survives
  out.begin2 = await step(() => c.query('BEGIN'), (r) => r.command);
  out.outer = await step(() => c.query(INS, [4, 'outer']));
  out.savepoint = await step(() => c.query('SAVEPOINT sp'), (r) => r.command);
  out.sp_rejected = await step(() => c.query('UPDATE policies SET tenant_id = $1 WHERE name = $2', [3, 'outer']));
  out.sp_aborted = await step(() => c.query(INS, [3, 'sp-aborted']));
  out.rollback_to = await step(() => c.query('ROLLBACK TO SAVEPOINT sp'), (r) => r.command);
  out.sp_good = await step(() => c.query(INS, [3, 'after-savepoint']));
  out.commit = await step(() => c.query('COMMIT'), (r) => r.command);
  return out;
}

/* 4: a pool of clients inserting concurrently for different tenants. */
async function pool() {
  const p = new Pool({ ...config, max: 6 });
  const out = { workers: [], queries: [] };
  try {
    const nWorkers = 4;   // of the 6 clients: the queries below get the rest
    let started = 0;
    let release;
    const barrier = new Promise((r) => { release = r; });
    const allStarted = () => {
      if (++started === nWorkers) release();
      return barrier;
    };
    const worker = async (w) => {
      const c = await p.connect();
      try {
        const t = TENANTS[w % 3];
        const res = { tenant: t, pid: (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, rows: [] };
        await c.query('BEGIN');
        await allStarted(); // every worker holds its own client and an open transaction
        for (let i = 0; i < 15; i++) {
          const q = i % 2 ? { name: 'pool_ins', text: INS, values: [t, `w${w}-${i}`] } : { text: INS, values: [t, `w${w}-${i}`] };
          res.rows.push((await c.query(q)).rows[0].workspace_id);
          await new Promise((r) => setImmediate(r));   // let the other clients interleave
        }
        if (w === 1) {
          // one worker also has a rejected statement: its transaction alone is lost
          res.rejected = await step(() => c.query(INS_WS, [t, WS_WRONG[t], `w${w}-bad`]));
          await c.query('ROLLBACK');
        } else {
          await c.query('COMMIT');
        }
        return res;
      } finally {
        c.release();
      }
    };
    const jobs = [];
    for (let w = 0; w < nWorkers; w++) jobs.push(worker(w));
    const qs = [];
    for (let i = 0; i < 60; i++) {
      const t = TENANTS[(i + 2) % 3];
      qs.push(p.query(INS, [t, `pq-${i}`]).then((r) => [t, r.rows[0].workspace_id]));
    }
    out.workers = await Promise.all(jobs);
    out.queries = await Promise.all(qs);
    out.total = p.totalCount;
  } finally {
    await p.end();
  }
  return out;
}
const WS_WRONG = { 3: 1, 4: 2, 6: 1 };

async function main() {
  const scenarios = { relay, unnamed, named, transaction, pool };
  const name = process.argv[2];
  if (!scenarios[name]) {
    process.stderr.write(`usage: node pg_driver.js ${Object.keys(scenarios).join('|')}\n`);
    process.exit(2);
  }
  let result;
  if (name === 'pool') {
    result = await pool();
  } else {
    const c = new Client(config);
    await c.connect();
    try {
      result = await scenarios[name](c);
    } finally {
      await c.end();
    }
  }
  process.stdout.write(JSON.stringify(result, null, 1) + '\n');
}

main().catch((e) => {
  process.stderr.write(`pg_driver.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
