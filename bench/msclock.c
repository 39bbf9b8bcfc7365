/* Print CLOCK_MONOTONIC in milliseconds (busybox's date has no sub-second format). */
#include <stdio.h>
#include <time.h>

int main(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  printf("%.3f\n", t.tv_sec * 1000.0 + t.tv_nsec / 1e6);
  return 0;
}
