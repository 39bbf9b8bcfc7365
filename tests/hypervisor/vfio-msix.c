/* A stand-in for QEMU with one passthrough device, for the hypervisor tier's late-vector
 * scenario: it takes QEMU's `-device vfio-pci,host=BDF` (other arguments are ignored), opens the
 * device through VFIO as QEMU does (container, IOMMU group, device fd), and then, on signals,
 * does what a guest driver makes QEMU do:
 *   SIGUSR1  enable every MSI-X vector (the kernel creates `vfio-msix[N](BDF)` IRQs)
 *   SIGUSR2  disable them and enable them again (the IRQs come back, possibly renumbered,
 *            as after a guest reboot)
 *   SIGTERM  exit (closing the device frees the IRQs)
 * `kvmtune run -- vfio-msix …` sees the group open in /proc/PID/fd and runs `started`; the
 * vectors appear only later, which is what `kvmtune watch` must catch.
 * Built static on the host (no compiler in the guest). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

static volatile sig_atomic_t want;

static void on_signal(int sig) { want = sig; }

static void die(const char *what) {
    fprintf(stderr, "vfio-msix: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Enable `count` MSI-X vectors, each with an eventfd, or disable them all (count 0). */
static void set_msix(int device, unsigned count) {
    size_t size = sizeof(struct vfio_irq_set) + count * sizeof(int);
    struct vfio_irq_set *set = calloc(1, size);
    set->argsz = size;
    set->index = VFIO_PCI_MSIX_IRQ_INDEX;
    set->start = 0;
    set->count = count;
    set->flags = VFIO_IRQ_SET_ACTION_TRIGGER |
                 (count ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
    for (unsigned i = 0; i < count; i++) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0)
            die("eventfd");
        memcpy((char *)set->data + i * sizeof(int), &fd, sizeof(int));
    }
    if (ioctl(device, VFIO_DEVICE_SET_IRQS, set) < 0)
        die(count ? "enable MSI-X" : "disable MSI-X");
    free(set);
}

int main(int argc, char **argv) {
    const char *bdf = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "-device") && !strncmp(argv[i + 1], "vfio-pci,", 9)) {
            const char *host = strstr(argv[i + 1], "host=");
            if (host)
                bdf = strndup(host + 5, strcspn(host + 5, ","));
        }
    if (!bdf) {
        fprintf(stderr, "usage: vfio-msix [QEMU ARGS] -device vfio-pci,host=BDF\n");
        return 2;
    }
    char path[PATH_MAX], link[PATH_MAX];
    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    if (n < 0)
        die(path);
    link[n] = 0;
    snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);

    int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (container < 0)
        die("/dev/vfio/vfio");
    int group = open(path, O_RDWR | O_CLOEXEC);
    if (group < 0)
        die(path);
    struct vfio_group_status status = {.argsz = sizeof(status)};
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0 || !(status.flags & VFIO_GROUP_FLAGS_VIABLE))
        die("group not viable (every device of the group must be bound to vfio-pci)");
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
        die("VFIO_GROUP_SET_CONTAINER");
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0 &&
        ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
        die("VFIO_SET_IOMMU");
    int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
    if (device < 0)
        die("VFIO_GROUP_GET_DEVICE_FD");
    struct vfio_irq_info info = {.argsz = sizeof(info), .index = VFIO_PCI_MSIX_IRQ_INDEX};
    if (ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0 || info.count == 0)
        die("the device has no MSI-X");
    printf("vfio-msix: %s open through %s, %u MSI-X vectors; SIGUSR1 enables them\n", bdf, path,
           info.count);
    fflush(stdout);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        pause();
        int sig = want;
        want = 0;
        if (sig == SIGUSR1) {
            set_msix(device, info.count);
        } else if (sig == SIGUSR2) {
            set_msix(device, 0);
            set_msix(device, info.count);
        } else if (sig == SIGTERM || sig == SIGINT) {
            return 0;
        }
        printf("vfio-msix: %s\n", sig == SIGUSR1 ? "enabled" : "re-enabled");
        fflush(stdout);
    }
}
