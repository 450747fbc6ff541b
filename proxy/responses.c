/*
 * responses.c -- server messages the proxy reads on their way to the client:
 * ReadyForQuery (transaction status), CommandComplete (a statement
 * confirmed), ErrorResponse, ParameterStatus.
 */
#include "config.h"

#include <string.h>

#include <event2/buffer.h>

#include "policy/sqlstate.h"
#include "proxy/pgproto.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/track.h"

static void note_error(tg_session *s, const uint8_t *msg, const pgf_header *h)
{
    pgf_error_fields f;
    if (!pgf_parse_error(msg + 5, h->len - 4, &f) || !f.severity)
        return;
    if (strcmp(f.severity, "FATAL") == 0 || strcmp(f.severity, "PANIC") == 0)
        s->sv.said_fatal = true;
}

int relay_server_message(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out)
{
    size_t wire = pgf_wire_len(h);
    const uint8_t *msg = evbuffer_pullup(in, (ssize_t)wire);
    if (!msg) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    switch (h->type) {
    case PG_BE_READY:
        if (h->len >= 5)
            s->sv.txn_status = (char)msg[5];
        break;
    case PG_BE_ERROR:
        note_error(s, msg, h);
        break;
    default:
        break;
    }
    track_server_msg(s->track, h->type);
    if (h->type == PG_BE_READY && track_pending(s->track) == 0)
        s->idle_since = time(NULL);
    s->sv.bytes_in += wire;
    s->cl.bytes_out += wire;
    evbuffer_remove_buffer(in, out, wire);
    return 0;
}
