/* Fragment the memory of the node this process runs on, the way a long-running host is:
 * anonymous memory, page cache and slab objects allocated interleaved, then every other
 * anonymous page freed, so that much memory is free but little of it in contiguous blocks.
 * Holds what it kept until it is killed.
 *
 * Usage: fragment MIB CACHE_SOURCE SLAB_DIR
 *   MIB           anonymous memory to touch (half of it is kept)
 *   CACHE_SOURCE  a file or block device read 4 KiB at a time without readahead (page cache),
 *                 one page for every 16 anonymous pages
 *   SLAB_DIR      an empty directory on tmpfs: one file (an inode and a dentry, unmovable
 *                 slab) is created there for every 64 anonymous pages
 * Prints "ready KEPT_MIB CACHE_MIB FILES" on stdout once done, then waits. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: fragment MIB CACHE_SOURCE SLAB_DIR\n");
    return 2;
  }
  size_t pages = (size_t)atol(argv[1]) * 256;
  int cache = open(argv[2], O_RDONLY);
  if (cache < 0) {
    perror(argv[2]);
    return 1;
  }
  posix_fadvise(cache, 0, 0, POSIX_FADV_RANDOM);
  off_t cache_size = lseek(cache, 0, SEEK_END);
  char *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  /* No transparent hugepages: each page is allocated (and later freed) on its own. */
  madvise(mem, pages * PAGE, MADV_NOHUGEPAGE);
  char buf[PAGE], path[4096];
  size_t cached = 0, files = 0;
  for (size_t i = 0; i < pages; i++) {
    memset(mem + i * PAGE, (int)(i | 1), 64);
    if (i % 16 == 0 && cache_size > 0) {
      off_t at = (off_t)((i / 16) * PAGE) % cache_size;
      if (pread(cache, buf, PAGE, at) == (ssize_t)PAGE) cached++;
    }
    if (i % 64 == 0) {
      snprintf(path, sizeof(path), "%s/f%zu", argv[3], i);
      int fd = open(path, O_CREAT | O_WRONLY, 0600);
      if (fd >= 0) {
        close(fd);
        files++;
      }
    }
  }
  for (size_t i = 1; i < pages; i += 2) madvise(mem + i * PAGE, PAGE, MADV_DONTNEED);
  printf("ready %zu %zu %zu\n", pages / 2 / 256, cached / 256, files);
  fflush(stdout);
  for (;;) pause();
}
