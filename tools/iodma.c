/* SPDX-License-Identifier: MIT */
/*
 * iodma.c - the `iodma` command: subcommands over the iodma library.
 *
 *   iodma info [--json] [--device BDF] [--no-probe]
 */
#include <stdio.h>
#include <string.h>

#include "info.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iodma COMMAND [ARGS]\n"
		"\n"
		"Commands:\n"
		"  info     what the IOMMU and VFIO of this machine allow\n"
		"           (iodma info --help for its options)\n"
		"\n"
		"  iodma --help | --version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("iodma %s\n", IODMA_TOOL_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "info"))
		return info_main(argc - 1, argv + 1, stdout, stderr);
	fprintf(stderr, "iodma: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
