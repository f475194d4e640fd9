// Queue partners a C++ programmer would pick instead of mproc:
// Boost.Interprocess message_queue between two processes, same shapes and
// bench names as bench_queue.c (impl "boost").
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstdio>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include "harness.h"
}

namespace bip = boost::interprocess;

struct ctx {
    size_t size;
    std::string name;
};

static double run(void *p, uint64_t n)
{
    ctx *c = static_cast<ctx *>(p);
    bip::message_queue::remove(c->name.c_str());
    bip::message_queue q(bip::create_only, c->name.c_str(), 1000, c->size);
    double t0 = mp_bench_now();
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        bip::message_queue w(bip::open_only, c->name.c_str());
        std::vector<unsigned char> m(c->size, 1);
        for (uint64_t i = 0; i < n; i++)
            w.send(m.data(), m.size(), 0);
        _exit(0);
    }
    std::vector<unsigned char> buf(c->size);
    for (uint64_t i = 0; i < n; i++) {
        bip::message_queue::size_type got;
        unsigned prio;
        q.receive(buf.data(), buf.size(), got, prio);
        MP_BENCH_CHECK(got == c->size);
    }
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double t = mp_bench_now() - t0;
    bip::message_queue::remove(c->name.c_str());
    return t;
}

int main()
{
    ctx a{64, "mproc-bench-boost-" + std::to_string(getpid())};
    mp_bench_run("queue.1p1c_64B", "boost", MP_BENCH_OPS_PER_S, 0, run, &a, mp_bench_n(1000000), 0);
    ctx b{4096, a.name};
    mp_bench_run("queue.1p1c_4K", "boost", MP_BENCH_OPS_PER_S, 0, run, &b, mp_bench_n(200000), 0);
    return 0;
}
