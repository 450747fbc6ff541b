/* placeholder replaced by the runtime */
#include "config.h"
#include "proxy/commands.h"
int tg_daemon_main(const char *config_path) { (void)config_path; return 1; }
