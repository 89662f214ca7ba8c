/*
 * Private to the command line (src/app/cli*.c): helpers the commands share, and the
 * commands that live in files of their own. kx_cli_main (cli.c) dispatches to them.
 */
#ifndef KX_CLI_INT_H
#define KX_CLI_INT_H

#include "klaxon/common.h"

/* "klaxon: FILE:LINE:COL: message" on stderr. */
void kx__cli_print_err(const kx_err *e);
/* klaxon alerts list|dead|retry (cli_alerts.c); argv[0] is "alerts". Exit code. */
int kx__cli_alerts(int argc, char **argv);
/* klaxon config check FILE (cli_config.c); argv[0] is "config". */
int kx__cli_config(int argc, char **argv);
/* klaxon route -c CONFIG [FILE] (cli_config.c); argv[0] is "route". */
int kx__cli_route(int argc, char **argv);

#endif
