/* klaxon entry point: dispatches to the subcommands in src/app/cli.c. */
int kx_cli_main(int argc, char **argv);

int main(int argc, char **argv)
{
    return kx_cli_main(argc, argv);
}
