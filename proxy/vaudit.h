/*
 * vaudit.h -- violation_audit: every rejection and refusal also becomes a
 * row of the policy's audit table (action workspace_isolation.violation,
 * status denied; observe mode's would-be ones too, status observed, with
 * violation_audit = all), written by a worker thread over its own connection
 * (sidecar_dsn), in batches.
 *
 * The client never waits for it: vaudit_violation() only queues (bounded by
 * violation_audit_queue; a full queue drops and counts in
 * stats->audit_dropped). The row is written on another connection, so it
 * survives the rollback of the rejected statement's transaction. Written
 * rows count in stats->audit_written. A batch that cannot be written for a
 * lost connection is retried (back-off up to 30 s); one the server refuses
 * (a missing table, a permission) is dropped, counted and logged.
 *
 * What a row holds: tenant and workspace ids when the rejection names an
 * existing tenant that has a workspace (else both NULL: the audit table's
 * invariant is tenant_id IS NULL OR workspace_id IS NOT NULL); context
 * {table, rule, sqlstate, mode, fingerprint, application_name, client_addr,
 * client_port, user, database, session_id, occurred_at} -- never a value or
 * statement text. Would-be violations of observe mode are written only with
 * violation_audit = all, as status observed: they were not denied.
 */
#ifndef TG_VAUDIT_H
#define TG_VAUDIT_H

#include "policy/stats.h"
#include "proxy/session.h"

struct tg_runtime;
struct tg_mailbox;
typedef struct tg_vaudit tg_vaudit;

tg_vaudit *vaudit_new(struct tg_runtime *rt, struct tg_mailbox *mb);
/* Loop thread: queue v of session s when violation_audit is on. server_msg,
 * the server's message for a rejection the helper functions raised, is read
 * for the tenant id only. A NULL rt->vaudit is a no-op. */
void vaudit_violation(tg_session *s, const tg_violation *v, const char *server_msg);
/* Entries queued or being written. */
int vaudit_pending(const tg_vaudit *va);
/* Exit: write what is queued when the last write worked, join the thread. */
void vaudit_stop(tg_vaudit *va);
void vaudit_free(tg_vaudit *va);

#endif
