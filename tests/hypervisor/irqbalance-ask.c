/* Ask the running irqbalance one question on its socket and print the answer, as irqbalance-ui
 * does: irqbalance answers only messages that carry the sender's credentials (SCM_CREDENTIALS).
 *   irqbalance-ask SOCKET MESSAGE        e.g. irqbalance-ask /run/irqbalance/irqbalance42.sock setup
 * The hypervisor tier uses `setup` to read the CPUs irqbalance is banned from (its "BANNED"
 * field), before, during and after kvmtune's VMs. Built static on the host (no compiler in the
 * guest). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: irqbalance-ask SOCKET MESSAGE\n");
        return 2;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof(addr.sun_path) - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror(argv[1]);
        return 1;
    }
    struct ucred cred = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
    char control[CMSG_SPACE(sizeof(cred))];
    memset(control, 0, sizeof(control));
    struct iovec iov = {.iov_base = argv[2], .iov_len = strlen(argv[2])};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control, .msg_controllen = sizeof(control)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_CREDENTIALS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(cred));
    memcpy(CMSG_DATA(cmsg), &cred, sizeof(cred));
    if (sendmsg(fd, &msg, 0) < 0) {
        perror("sendmsg");
        return 1;
    }
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        fwrite(buf, 1, (size_t)n, stdout);
    putchar('\n');
    return 0;
}
