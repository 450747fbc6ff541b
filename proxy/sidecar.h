/*
 * sidecar.h -- the daemon's own database connection at start-up.
 */
#ifndef TG_SIDECAR_H
#define TG_SIDECAR_H

#include <stddef.h>

#include "policy/config.h"

/* 0: helpers present and of this policy's version; 1: missing or another
 * version (msg says what to run); -1: cannot tell (msg says why). */
int sidecar_check_helpers(const tg_config *cfg, char *msg, size_t len);

#endif
