// SPDX-License-Identifier: MIT
// Every public header, included from C++17, with every public macro used;
// built with -std=c++17 -pedantic-errors -Wall -Wextra -Werror (g++ and,
// if installed, clang++) and run: the library is called through the
// C++-compiled declarations (extern "C" linkage) and the options
// initialiser must produce the same bytes as in C (size set, rest zero).
#include <iodma.h>
#include <iodma/platform.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

static int failures;

#define CHECK(c)                                                              \
	do {                                                                  \
		if (!(c)) {                                                   \
			std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
			failures++;                                           \
		}                                                             \
	} while (0)

template <typename T> static bool opts_ok(const T &o)
{
	const unsigned char *p = reinterpret_cast<const unsigned char *>(&o);

	if (o.size != sizeof(T))
		return false;
	for (size_t i = sizeof(o.size); i < sizeof(T); i++)
		if (p[i])
			return false;
	return true;
}

static const unsigned long long macros[] = {
	(unsigned long long)(IODMA_BACKEND_OPS_VERSION),
	(unsigned long long)alignof(struct iodma_vhost_user_reply),
	(unsigned long long)(IODMA_BACKEND_OPS_VERSION_MIN),
	(unsigned long long)(IODMA_MAX_IOVA_RANGES),
	(unsigned long long)(IODMA_CAP_MAP_FD),
	(unsigned long long)(IODMA_CAP_DIRTY_TRACKING),
	(unsigned long long)(IODMA_CAP_UNMAP_ALL),
	(unsigned long long)(IODMA_VERSION_MAJOR),
	(unsigned long long)(IODMA_VERSION_MINOR),
	(unsigned long long)(IODMA_VERSION_PATCH),
	(unsigned long long)(IODMA_PERM_READ),
	(unsigned long long)(IODMA_PERM_WRITE),
	(unsigned long long)(IODMA_PERM_RW),
	(unsigned long long)(IODMA_DOMAIN_DISABLED),
	(unsigned long long)(IODMA_REGION_ANON),
	(unsigned long long)(IODMA_REGION_HUGETLB),
	(unsigned long long)(IODMA_VFIO_REGION_BAR0),
	(unsigned long long)(IODMA_VFIO_REGION_ROM),
	(unsigned long long)(IODMA_VFIO_REGION_CONFIG),
	(unsigned long long)(IODMA_VFIO_REGION_VGA),
	(unsigned long long)(IODMA_VFIO_NR_BARS),
	(unsigned long long)(IODMA_VFIO_REGION_READ),
	(unsigned long long)(IODMA_VFIO_REGION_WRITE),
	(unsigned long long)(IODMA_VFIO_REGION_MMAP),
	(unsigned long long)(IODMA_VHOST_USER_FD_KICK),
	(unsigned long long)(IODMA_VHOST_USER_FD_CALL),
	(unsigned long long)(IODMA_VHOST_USER_FD_ERR),
	(unsigned long long)(IODMA_VHOST_USER_MAX_VRINGS),
	(unsigned long long)(IODMA_VHOST_USER_MAX_SLOTS),
	(unsigned long long)(IODMA_VHOST_USER_REPLY_MAX),
	(unsigned long long)(IODMA_VHOST_USER_MSG_MAX),
	(unsigned long long)(IODMA_VHOST_USER_MAX_FDS),
};

int main()
{
	struct iodma_domain_opts domain_opts = IODMA_OPTS_INIT(struct iodma_domain_opts);
	CHECK(opts_ok(domain_opts));
	struct iodma_dev_opts dev_opts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	CHECK(opts_ok(dev_opts));
	struct iodma_memory_opts memory_opts = IODMA_OPTS_INIT(struct iodma_memory_opts);
	CHECK(opts_ok(memory_opts));
	struct iodma_vfio_opts vfio_opts = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	CHECK(opts_ok(vfio_opts));
	struct iodma_iommufd_opts iommufd_opts = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	CHECK(opts_ok(iommufd_opts));
	struct iodma_vhost_user_opts vhost_user_opts = IODMA_OPTS_INIT(struct iodma_vhost_user_opts);
	CHECK(opts_ok(vhost_user_opts));
	struct iodma_soft_opts soft_opts = IODMA_OPTS_INIT(struct iodma_soft_opts);
	CHECK(opts_ok(soft_opts));
	struct iodma_platform_ops platform_ops = IODMA_OPTS_INIT(struct iodma_platform_ops);
	CHECK(opts_ok(platform_ops));
	// Output structs take the same initialiser (growth rule of common.h).
	struct iodma_caps caps = IODMA_STRUCT_INIT(struct iodma_caps);
	CHECK(opts_ok(caps));
	struct iodma_dev_stats dev_stats = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	CHECK(opts_ok(dev_stats));
	struct iodma_xlate_stats xlate_stats = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	CHECK(opts_ok(xlate_stats));
	struct iodma_vfio_stats vfio_stats = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	CHECK(opts_ok(vfio_stats));
	struct iodma_vhost_user_stats vhost_user_stats =
		IODMA_STRUCT_INIT(struct iodma_vhost_user_stats);
	CHECK(opts_ok(vhost_user_stats));
	struct iodma_xlate_iter xlate_iter = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	CHECK(opts_ok(xlate_iter));
	CHECK(macros[0] == IODMA_BACKEND_OPS_VERSION);
	CHECK(sizeof(macros) / sizeof(macros[0]) == 32);
	CHECK(IODMA_PERM_RW == (IODMA_PERM_READ | IODMA_PERM_WRITE));
	CHECK(std::strlen(iodma_version()) > 0);
	CHECK(iodma_page_size() >= 4096);

	// A real call through the C++ declarations: a soft domain and memory.
	struct iodma_domain *d = nullptr;
	struct iodma_memory *m = nullptr;
	domain_opts.backend = iodma_backend_soft();
	domain_opts.backend_config = &soft_opts;
	CHECK(iodma_memory_create(&memory_opts, &m) == 0);
	domain_opts.memory = m;
	CHECK(iodma_domain_create(&domain_opts, &d) == 0);
	CHECK(iodma_domain_get_caps(d, &caps) == 0);
	CHECK(caps.size == sizeof(caps) && caps.nr_ranges >= 1);
	CHECK(iodma_xlate_get_stats(d, &xlate_stats) == 0);
	CHECK(iodma_xlate_begin(&xlate_iter, d, 0, 0, IODMA_PERM_READ) == 0);
	caps.size = 0;
	CHECK(iodma_domain_get_caps(d, &caps) == -EINVAL);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
	memory_opts.flags = 1;
	CHECK(iodma_memory_create(&memory_opts, &m) == -EINVAL);
	if (failures)
		return 1;
	std::puts("C++17: all public headers and macros OK");
	return 0;
}
