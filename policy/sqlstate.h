/*
 * sqlstate.h -- every SQLSTATE that tenantguard itself sends to a client.
 *
 * Chosen where the error is raised (style habit 6): a sender takes one of
 * these names, never a literal and never a default.
 */
#ifndef TG_SQLSTATE_H
#define TG_SQLSTATE_H

#define TG_SQLSTATE_PROTOCOL_VIOLATION      "08P01" /* bad framing, bad startup */
#define TG_SQLSTATE_CONNECTION_FAILURE      "08006" /* server unreachable / gone */
#define TG_SQLSTATE_CANNOT_CONNECT_NOW      "57P03" /* shutting down */
#define TG_SQLSTATE_ADMIN_SHUTDOWN          "57P01" /* SIGTERM / SIGINT / SHUTDOWN */
#define TG_SQLSTATE_IDLE_SESSION_TIMEOUT    "57P05" /* client_idle_timeout */
#define TG_SQLSTATE_TOO_MANY_CONNECTIONS    "53300" /* max_client_conn */
#define TG_SQLSTATE_OUT_OF_MEMORY           "53200"
#define TG_SQLSTATE_INVALID_AUTHORIZATION   "28000" /* auth refused by the proxy */
#define TG_SQLSTATE_INVALID_PASSWORD        "28P01"
#define TG_SQLSTATE_FEATURE_NOT_SUPPORTED   "0A000" /* a form tenantguard cannot prove safe */
#define TG_SQLSTATE_INSUFFICIENT_PRIVILEGE  "42501" /* an isolation rule violation */
#define TG_SQLSTATE_SYNTAX_ERROR            "42601" /* admin console: bad command */
#define TG_SQLSTATE_INTERNAL_ERROR          "XX000"
#define TG_SQLSTATE_INVALID_CATALOG_NAME    "3D000" /* console: the database is not "tenantguard" */
#define TG_SQLSTATE_CONFIG_FILE_ERROR       "F0000" /* console RELOAD of a bad config */
#define TG_SQLSTATE_UNDEFINED_OBJECT        "42704" /* console: no such client */
#define TG_SQLSTATE_CANNOT_CONNECT          "08001" /* console: the sidecar cannot reach PostgreSQL */
#define TG_SQLSTATE_NOT_IN_PREREQUISITE     "55000" /* console: no run to pause; unresolvable rows */
#define TG_SQLSTATE_OBJECT_IN_USE           "55006" /* console: a backfill already runs here */
#define TG_SQLSTATE_LOCK_NOT_AVAILABLE      "55P03" /* console: another run holds the backfill lock */

#endif
