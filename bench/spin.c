/* A busy thread, standing in for a vCPU that never idles: pinned to one CPU, it only computes
 * (no system call while it spins; the clock is read through the vDSO) for the given seconds.
 * Usage: spin CPU SECONDS */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: spin CPU SECONDS\n");
    return 2;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(atoi(argv[1]), &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    perror("sched_setaffinity");
    return 1;
  }
  struct timespec now, end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += (time_t)atof(argv[2]);
  volatile unsigned long work = 0;
  for (;;) {
    for (int i = 0; i < (1 << 20); i++) work++;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) break;
  }
  return 0;
}
