/* SPDX-License-Identifier: MIT */
/* time.h - a monotonic clock from the board's timer (bm_libc.c). */
#ifndef BM_TIME_H
#define BM_TIME_H
#include <stdint.h>

typedef int64_t time_t;
struct timespec {
	time_t tv_sec;
	long tv_nsec;
};
#define CLOCK_MONOTONIC 1
int clock_gettime(int clk, struct timespec *ts);
#endif
