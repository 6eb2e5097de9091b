/* SPDX-License-Identifier: MIT */
/*
 * consumer.c - a program linked statically against the installed-form
 * libiodma.a (issue 10) that defines its own functions under names the
 * library uses internally: os_malloc, btree_insert, bounce_map.
 *
 * With the library's internal symbols global in the archive, the link fails
 * ("multiple definition of `os_malloc'"), or worse, one side silently calls
 * the other's function.  The archive built by scripts/static-archive.sh
 * keeps them local, so this links, both sides call their own functions, and
 * a bounced streaming map through a soft domain (which runs the library's
 * own os_malloc, btree_insert and bounce_map) works.  No cmocka: the
 * program links only libiodma.a, liburcu-bp and libc.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iodma.h>

/* The consumer's own functions: different signatures from the library's. */
int os_malloc(int x);
int btree_insert(int a, int b);
const char *bounce_map(void);

int os_malloc(int x) { return x * 3; }
int btree_insert(int a, int b) { return a - b; }
const char *bounce_map(void) { return "consumer"; }

#define CHECK(c) do { if (!(c)) { \
	fprintf(stderr, "static-consumer: %s:%d: %s\n", __FILE__, __LINE__, #c); \
	return 1; } } while (0)

int main(void)
{
	struct iodma_domain_opts dopts = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_dev_opts vopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d = NULL;
	struct iodma_dev *dev = NULL;
	static char buf[4096] __attribute__((aligned(4096)));
	char back[64], want[32];
	uint64_t iova = 0;

	CHECK(os_malloc(14) == 42);
	CHECK(btree_insert(50, 8) == 42);
	CHECK(strcmp(bounce_map(), "consumer") == 0);
	snprintf(want, sizeof(want), "%d.%d.%d", IODMA_VERSION_MAJOR,
		 IODMA_VERSION_MINOR, IODMA_VERSION_PATCH);
	CHECK(strcmp(iodma_version(), want) == 0); /* header = archive */

	dopts.backend = iodma_backend_soft();
	CHECK(iodma_domain_create(&dopts, &d) == 0);
	vopts.domain = d;
	vopts.bounce = IODMA_BOUNCE_ALWAYS; /* every map runs bounce_map() */
	CHECK(iodma_dev_create(&vopts, &dev) == 0);

	memcpy(buf, "through the library's own bounce_map", 37);
	CHECK(iodma_map_single(dev, buf, 37, IODMA_TO_DEVICE, &iova) == 0);
	CHECK(iodma_read(d, iova, back, 37) == 0); /* the device's view */
	CHECK(memcmp(back, buf, 37) == 0);
	CHECK(iodma_unmap_single(dev, iova, 37, IODMA_TO_DEVICE) == 0);

	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	printf("static-consumer: ok (own os_malloc, btree_insert, bounce_map; library %s)\n",
	       iodma_version());
	return 0;
}
