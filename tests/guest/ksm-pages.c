/* ksm-pages N SECONDS: map N identical anonymous pages, mark them MADV_MERGEABLE and keep
 * them SECONDS, so that ksmd has something to merge (pages_shared > 0) and the guest's kernel
 * shows how it guards merge_across_nodes while pages are merged (EBUSY).
 * Built static by run.sh for the test guest's initramfs (busybox has no such tool). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 256;
    long secs = argc > 2 ? atol(argv[2]) : 60;
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("ksm-pages: mmap");
        return 1;
    }
    memset(p, 0x5a, n * page); /* not zero: the zero page is shared without KSM */
    if (madvise(p, n * page, MADV_MERGEABLE) != 0) {
        perror("ksm-pages: madvise(MADV_MERGEABLE)");
        return 1;
    }
    sleep(secs);
    return 0;
}
