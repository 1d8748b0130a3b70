/* wanemu: the delay stage of fedmq's WAN emulator (docs/wan.md).
 *
 * Two network namespaces each hold a TUN device (created by wan.sh). This program attaches to
 * both (setns into each namespace, then TUNSETIFF on the existing device), and forwards every
 * IP packet read from one to the other after holding it for the configured one-way delay.
 * The delay is constant, so each direction is a FIFO ring: a packet is written once the head's
 * due time has passed. Loss (iptables statistic) and the bandwidth cap (tbf on the TUN egress)
 * are applied by the kernel around this stage; this program never drops a packet except when
 * a ring is full (counted, reported on exit).
 *
 * usage: wanemu NS_A NS_B DEV ONE_WAY_DELAY_US
 * Runs until SIGTERM/SIGINT, then prints "forwarded=<n> ring_drops=<n>" to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOT 2048          /* bytes per packet slot: the TUN MTU is 1500 */
#define RING (1 << 16)     /* packets held per direction: > 1 Gbit/s x 400 ms of 1500 B */
#define BATCH 256          /* packets read per wake-up and direction */

struct ring {
    unsigned char *buf;
    uint32_t *len;
    uint64_t *due;
    uint32_t head, tail; /* head: next to write out; tail: next free slot */
    uint64_t forwarded, drops;
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int open_tun_in(const char *ns, const char *dev) {
    char path[256];
    snprintf(path, sizeof path, "/var/run/netns/%s", ns);
    int nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
        fprintf(stderr, "wanemu: cannot enter namespace %s: %s\n", ns, strerror(errno));
        exit(2);
    }
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
        fprintf(stderr, "wanemu: cannot attach %s in %s: %s\n", dev, ns, strerror(errno));
        exit(2);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void ring_init(struct ring *r) {
    memset(r, 0, sizeof *r);
    r->buf = malloc((size_t)RING * SLOT);
    r->len = malloc(sizeof(uint32_t) * RING);
    r->due = malloc(sizeof(uint64_t) * RING);
    if (!r->buf || !r->len || !r->due) {
        fprintf(stderr, "wanemu: out of memory\n");
        exit(2);
    }
}

/* Read what is waiting on `in` into the ring, stamped due at now + delay. */
static void take(struct ring *r, int in, uint64_t delay) {
    for (int i = 0; i < BATCH; i++) {
        uint32_t slot = r->tail % RING;
        unsigned char scratch[SLOT];
        int full = r->tail - r->head >= RING;
        ssize_t n = read(in, full ? scratch : r->buf + (size_t)slot * SLOT, SLOT);
        if (n <= 0) return;
        if (full) { r->drops++; continue; }
        r->len[slot] = (uint32_t)n;
        r->due[slot] = now_ns() + delay;
        r->tail++;
    }
}

/* Write out every packet whose time has come; return ns until the next one (or -1). */
static int64_t give(struct ring *r, int out) {
    uint64_t now = now_ns();
    while (r->head != r->tail) {
        uint32_t slot = r->head % RING;
        if (r->due[slot] > now) return (int64_t)(r->due[slot] - now);
        if (write(out, r->buf + (size_t)slot * SLOT, r->len[slot]) < 0 && errno == EAGAIN)
            return 50000; /* the kernel pushed back: retry shortly */
        r->head++;
        r->forwarded++;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: wanemu NS_A NS_B DEV ONE_WAY_DELAY_US\n");
        return 2;
    }
    uint64_t delay = strtoull(argv[4], NULL, 10) * 1000ull;
    int fa = open_tun_in(argv[1], argv[3]);
    int fb = open_tun_in(argv[2], argv[3]);
    struct ring ab, ba;
    ring_init(&ab);
    ring_init(&ba);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    fprintf(stderr, "wanemu: forwarding %s <-> %s, one-way delay %llu us\n", argv[1], argv[2],
            (unsigned long long)(delay / 1000));
    while (!stop_flag) {
        int64_t wa = give(&ab, fb), wb = give(&ba, fa);
        int64_t wait = wa < 0 ? wb : (wb < 0 ? wa : (wa < wb ? wa : wb));
        struct pollfd p[2] = {{fa, POLLIN, 0}, {fb, POLLIN, 0}};
        struct timespec ts = {0, 0}, *tsp = NULL;
        if (wait >= 0) {
            ts.tv_sec = wait / 1000000000;
            ts.tv_nsec = wait % 1000000000;
            tsp = &ts;
        }
        if (ppoll(p, 2, tsp, NULL) < 0 && errno != EINTR) break;
        if (p[0].revents & POLLIN) take(&ab, fa, delay);
        if (p[1].revents & POLLIN) take(&ba, fb, delay);
    }
    fprintf(stderr, "forwarded=%llu ring_drops=%llu\n",
            (unsigned long long)(ab.forwarded + ba.forwarded),
            (unsigned long long)(ab.drops + ba.drops));
    return 0;
}
