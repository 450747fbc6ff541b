<?php
/*
 * PHP PDO (pdo_pgsql) through tenantguard, the way Laravel's database layer
 * drives it. Run by tests/integration/test_drivers_php.py:
 *
 *     php pdo_laravel.php SCENARIO
 *
 * with the connection in the environment: TG_HOST, TG_PORT, TG_DB, TG_USER,
 * TG_PASSWORD, TG_SSLMODE (Laravel's default: prefer), TG_EMULATE (0: server-side
 * prepares, Laravel's default; 1: PDO interpolates client-side). Prints one JSON
 * object: what each step returned, or the error it raised ({"error": {"sqlstate",
 * "message", "class"}}). The Python test asserts on it and on the stored rows.
 *
 * What is Laravel's here (illuminate/database, PostgresConnector, Connection,
 * Query\Grammars\PostgresGrammar, Query\Processors\PostgresProcessor):
 *   - the PDO options of Connectors\Connector::$options, ATTR_EMULATE_PREPARES false;
 *   - after connecting: `set names 'utf8'` and `set search_path to "public"`,
 *     both prepared and executed;
 *   - every query: prepare(), bindValue() per binding (PARAM_INT for ints,
 *     PARAM_STR otherwise), execute(), fetchAll(); the statement object then goes
 *     out of scope, and pdo_pgsql DEALLOCATEs its server-side statement;
 *   - insertGetId: `insert into "t" (...) values (...) returning "id"` run as a select;
 *   - nested transactions: PDO::beginTransaction(), then `SAVEPOINT trans2`,
 *     `ROLLBACK TO SAVEPOINT trans2`, PDO::commit() at level 1 only.
 */

declare(strict_types=1);

function env(string $name, ?string $default = null): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        if ($default === null) {
            fwrite(STDERR, "pdo_laravel.php: environment variable $name is not set\n");
            exit(2);
        }
        return $default;
    }
    return $v;
}

function connect(): PDO
{
    $dsn = sprintf('pgsql:host=%s;port=%s;dbname=%s;sslmode=%s',
                   env('TG_HOST'), env('TG_PORT'), env('TG_DB'), env('TG_SSLMODE', 'prefer'));
    $pdo = new PDO($dsn, env('TG_USER'), env('TG_PASSWORD'), [
        PDO::ATTR_CASE => PDO::CASE_NATURAL,
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_ORACLE_NULLS => PDO::NULL_NATURAL,
        PDO::ATTR_STRINGIFY_FETCHES => false,
        PDO::ATTR_EMULATE_PREPARES => env('TG_EMULATE', '0') === '1',
    ]);
    // PostgresConnector::configureEncoding() and configureSearchPath()
    $pdo->prepare("set names 'utf8'")->execute();
    $pdo->prepare('set search_path to "public"')->execute();
    return $pdo;
}

/* Connection::bindValues() */
function bind_values(PDOStatement $st, array $bindings): void
{
    foreach ($bindings as $key => $value) {
        $st->bindValue(is_string($key) ? $key : $key + 1, $value,
                       is_int($value) ? PDO::PARAM_INT : PDO::PARAM_STR);
    }
}

/* Connection::select(): rows as associative arrays (Laravel fetches objects) */
function select(PDO $pdo, string $sql, array $bindings = []): array
{
    $st = $pdo->prepare($sql);
    bind_values($st, $bindings);
    $st->execute();
    return $st->fetchAll(PDO::FETCH_ASSOC);
}

/* Connection::statement() */
function statement(PDO $pdo, string $sql, array $bindings = []): bool
{
    $st = $pdo->prepare($sql);
    bind_values($st, $bindings);
    return $st->execute();
}

/* Connection::affectingStatement(): update/delete */
function affecting(PDO $pdo, string $sql, array $bindings = []): int
{
    $st = $pdo->prepare($sql);
    bind_values($st, $bindings);
    $st->execute();
    return $st->rowCount();
}

/* Builder::insertGetId() with PostgresGrammar::compileInsertGetId + PostgresProcessor */
function insert_get_id(PDO $pdo, string $table, array $values): int
{
    $cols = implode(', ', array_map(fn ($c) => "\"$c\"", array_keys($values)));
    $marks = implode(', ', array_fill(0, count($values), '?'));
    $row = select($pdo, "insert into \"$table\" ($cols) values ($marks) returning \"id\"",
                  array_values($values))[0];
    return (int) $row['id'];
}

/* One step: its value, or the PDOException it raised. */
function step(callable $fn): array
{
    try {
        return ['ok' => $fn()];
    } catch (PDOException $e) {
        $info = $e->errorInfo ?? [];
        $text = (string) ($info[2] ?? $e->getMessage());
        // pdo_pgsql's errorInfo[2] is libpq's "ERROR:  <primary>\n<DETAIL/CONTEXT lines>"
        $first = strtok($text, "\n");
        $primary = preg_replace('/^(ERROR|FATAL):\s+/', '', $first === false ? '' : $first);
        return ['error' => ['sqlstate' => $info[0] ?? $e->getCode(), 'message' => $primary,
                            'full' => $text, 'class' => get_class($e)]];
    }
}

const INS = 'insert into "policies" ("tenant_id", "name") values (?, ?) returning "id", "workspace_id"';
const INS_NAMED = 'insert into "policies" ("name", "tenant_id") values (:name, :tenant) returning "id", "workspace_id"';
const INS_WS = 'insert into "policies" ("tenant_id", "workspace_id", "name") values (?, ?, ?)';

/* ------------------------------------------------------------------ scenarios */

/* Ordinary reads, parameters and a server error: compared with PostgreSQL directly. */
function scenario_relay(PDO $pdo): array
{
    $out = [];
    $out['emulated'] = $pdo->getAttribute(PDO::ATTR_EMULATE_PREPARES);
    $out['tenants'] = step(fn () => select($pdo, 'select "id", "workspace_id", "name" from "tenants" order by "id"'));
    $out['where'] = step(fn () => select($pdo, 'select "name" from "tenants" where "id" = :id or "name" = :n order by 1',
                                         ['id' => 3, 'n' => 't6']));
    $out['types'] = step(fn () => select($pdo,
        "select 1 + ? as sum, ?::text as t, null::int as n, true as b, 1.50::numeric(4,2) as num, "
        . "'{\"a\": [1, 2]}'::jsonb as j, 'é ☃'::text as u, ?::int8 as big",
        [41, "it's", 9007199254740993]));
    $out['series'] = step(fn () => select($pdo, 'select g from generate_series(1, ?) g', [5]));
    $out['path'] = step(fn () => select($pdo, "select current_setting('search_path') as p, "
                                        . "current_setting('client_encoding') as e"));
    // observe mode runs exactly what was sent: no workspace is injected
    $out['insert'] = step(fn () => select($pdo,
        'insert into "policies" ("tenant_id", "name") values (?, ?) returning "tenant_id", "workspace_id", "name"',
        [3, 'relay-row']));
    $out['error'] = step(fn () => select($pdo, 'select 1 / ? as x', [0]));
    $out['missing'] = step(fn () => select($pdo, 'select * from "no_such_table"'));
    $out['after'] = step(fn () => select($pdo, 'select count(*) as c from "policies" where "name" = ?', ['relay-row']));
    $out['deleted'] = step(fn () => affecting($pdo, 'delete from "policies" where "name" = ?', ['relay-row']));
    return $out;
}

/* 1-3: R1 injection with ? and :name bindings and insertGetId, R2, R4. */
function scenario_rules(PDO $pdo): array
{
    $out = [];
    $out['positional'] = [];
    foreach ([3, 4, 6] as $t) {
        $out['positional'][] = step(fn () => select($pdo, INS, [$t, "pos-$t"])[0]);
    }
    $out['named'] = [];
    foreach ([6, 3] as $t) {
        $out['named'][] = step(fn () => select($pdo, INS_NAMED, ['name' => "named-$t", 'tenant' => $t])[0]);
    }
    // a tenant id bound as a string (PARAM_STR), as form input arrives
    $out['string_tenant'] = step(fn () => select($pdo, INS, ['4', 'str-4'])[0]);
    $out['insert_get_id'] = step(fn () => insert_get_id($pdo, 'policies', ['tenant_id' => 4, 'name' => 'get-id']));
    $out['get_id_row'] = step(fn () => select($pdo, 'select "tenant_id", "workspace_id", "name" from "policies" where "id" = ?',
                                              [$out['insert_get_id']['ok'] ?? -1]));
    // R2: an explicit workspace that is not the tenant's; the connection goes on
    $out['mismatch'] = step(fn () => statement($pdo, INS_WS, [3, 1, 'bad']));
    $out['mismatch_named'] = step(fn () => statement($pdo,
        'insert into "policies" ("tenant_id", "workspace_id", "name") values (:t, :w, :n)',
        ['t' => 6, 'w' => 2, 'n' => 'bad-named']));
    $out['after_mismatch'] = step(fn () => select($pdo, INS, [6, 'after-mismatch'])[0]);
    $out['explicit_ok'] = step(fn () => statement($pdo, INS_WS, [6, 3, 'explicit-ok']));
    // R4: tenant_id may not change; writing the same value (Eloquent's save) and other columns may
    $out['change_tenant'] = step(fn () => affecting($pdo,
        'update "policies" set "tenant_id" = ?, "updated_at" = now() where "name" = ?', [4, 'pos-3']));
    $out['same_tenant'] = step(fn () => affecting($pdo,
        'update "policies" set "tenant_id" = ?, "name" = ? where "name" = ?', [6, 'pos-6-renamed', 'pos-6']));
    $out['other_column'] = step(fn () => affecting($pdo,
        'update "policies" set "policy_type" = :type where "tenant_id" = :t', ['type' => 'compliance', 't' => 3]));
    // Builder::insert() of several rows (keys sorted, one statement)
    $out['bulk'] = step(fn () => statement($pdo,
        'insert into "policies" ("name", "tenant_id") values (?, ?), (?, ?), (?, ?)',
        ['bulk-a', 4, 'bulk-b', 6, 'bulk-c', 3]));
    $out['usable'] = step(fn () => select($pdo, 'select count(*) as c from "policies"'));
    return $out;
}

/* 4: DB::transaction() around a nested DB::transaction() whose closure fails. */
function scenario_nested(PDO $pdo): array
{
    $out = [];
    $out['begin'] = step(fn () => $pdo->beginTransaction());
    $out['outer'] = step(fn () => select($pdo, INS, [3, 'outer'])[0]);
    $out['savepoint'] = step(fn () => $pdo->exec('SAVEPOINT trans2'));
    $out['inner_ok'] = step(fn () => select($pdo, INS, [4, 'inner-rolled-back'])[0]);
    $out['rejected'] = step(fn () => statement($pdo, INS_WS, [4, 2, 'inner-bad']));
    $out['aborted'] = step(fn () => select($pdo, INS, [6, 'while-aborted']));
    $out['in_transaction'] = step(fn () => $pdo->inTransaction());
    $out['rollback_to'] = step(fn () => $pdo->exec('ROLLBACK TO SAVEPOINT trans2'));
    $out['good'] = step(fn () => select($pdo, INS, [6, 'after-rollback'])[0]);
    $out['good_named'] = step(fn () => select($pdo, INS_NAMED, ['tenant' => 4, 'name' => 'after-rollback-named'])[0]);
    $out['commit'] = step(fn () => $pdo->commit());
    // a second transaction that fails as a whole: DB::transaction()'s rollBack()
    $out['begin2'] = step(fn () => $pdo->beginTransaction());
    $out['doomed'] = step(fn () => select($pdo, INS, [3, 'doomed'])[0]);
    $out['rejected2'] = step(fn () => affecting($pdo, 'update "policies" set "tenant_id" = ? where "name" = ?',
                                                [3, 'after-rollback']));
    $out['rollback'] = step(fn () => $pdo->rollBack());
    $out['after'] = step(fn () => select($pdo, 'select count(*) as c from "policies"'));
    return $out;
}

/* 5: many statements, each prepared (and deallocated) as Laravel does, and one reused. */
function scenario_many(PDO $pdo): array
{
    $n = (int) env('TG_ROWS', '200');
    $tenants = [3, 4, 6];
    $errors = [];
    $ids = [];
    for ($i = 0; $i < $n; $i++) {
        $t = $tenants[$i % 3];
        // a distinct text each time (a literal of its own), prepared and freed per query
        $r = step(fn () => select($pdo,
            "insert into \"policies\" (\"tenant_id\", \"name\", \"policy_type\") values (?, ?, 'distinct-$i') "
            . 'returning "id", "workspace_id"', [$t, "d-$i"])[0]);
        isset($r['ok']) ? $ids[] = $r['ok'] : $errors[] = $r;
        // the same text each time, prepared and freed per query
        $r = step(fn () => select($pdo, INS_NAMED, ['name' => "s-$i", 'tenant' => $t])[0]);
        isset($r['ok']) ? $ids[] = $r['ok'] : $errors[] = $r;
    }
    // one PDOStatement executed n times with new bindings
    $st = $pdo->prepare('insert into "policies" ("tenant_id", "name", "policy_type") values (:t, :n, :p)');
    for ($i = 0; $i < $n; $i++) {
        $t = $tenants[($i + 1) % 3];
        $r = step(function () use ($st, $t, $i) {
            bind_values($st, ['t' => $t, 'n' => "r-$i", 'p' => "reused-$t"]);
            return $st->execute();
        });
        if (!isset($r['ok'])) {
            $errors[] = $r;
        }
        if ($i == intdiv($n, 2)) {
            // a rejection in the middle: the reused statement goes on afterwards
            $errors[] = ['expected' => step(fn () => statement($pdo, INS_WS, [$t, 99, 'never']))];
        }
    }
    $st = null;
    $prepared = step(fn () => select($pdo, 'select count(*) as c from pg_prepared_statements'));
    return ['returned' => $ids, 'errors' => $errors, 'prepared_left' => $prepared];
}

$scenarios = ['relay', 'rules', 'nested', 'many'];
$name = $argv[1] ?? '';
if (!in_array($name, $scenarios, true)) {
    fwrite(STDERR, 'usage: php pdo_laravel.php ' . implode('|', $scenarios) . "\n");
    exit(2);
}
$pdo = connect();
$result = ('scenario_' . $name)($pdo);
echo json_encode($result, JSON_PRETTY_PRINT | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR), "\n";
