/*
 * statement.c -- Query and Parse from the client: the one place where the
 * protocol layer asks rewrite/ what to do with a statement text.
 */
#include "config.h"

#include <event2/buffer.h>

#include "policy/sqlstate.h"
#include "proxy/pgproto.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/track.h"

int relay_statement(tg_session *s, const pgf_header *h, struct evbuffer *in, struct evbuffer *out)
{
    size_t wire = pgf_wire_len(h);
    if (track_push(s->track, h->type, false, NULL) != 0) {
        sess_fatal(s, TG_SQLSTATE_OUT_OF_MEMORY, "tenantguard: out of memory", NULL);
        return -1;
    }
    s->cl.bytes_in += wire;
    s->sv.bytes_out += wire;
    evbuffer_remove_buffer(in, out, wire);
    return 0;
}
