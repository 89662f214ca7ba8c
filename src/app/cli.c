/* Placeholder until the CLI lands. */
#include <stdio.h>
int kx_cli_main(int argc, char **argv);
int kx_cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "klaxon: not built yet\n");
    return 2;
}
