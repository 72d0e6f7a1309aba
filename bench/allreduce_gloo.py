"""PyTorch gloo all_reduce of the U-Net's gradient, the anchor for
tinct's BenchmarkAllReduce (allreduce/bench_test.go).

Usage:
    /usr/bin/python3 bench/allreduce_gloo.py [--worlds 2,3,4] [--ops 20] [--go]

For each world size, that many processes on 127.0.0.1 join a gloo process
group and all-reduce (sum) a float32 vector of 1,950,659 elements (7.8 MB):
3 warm-up ops, then --ops timed ops, each preceded by a barrier. It prints
rank 0's mean and median time per op, the bus bandwidth
2·(n−1)/n · bytes / mean time (as nccl-tests and the Go benchmark report
it) and cpu-ms/op, the CPU time (user+system, all threads) of all ranks
together per op. Each rank runs torch with one intra-op thread.
With --go it then runs the Go benchmark on the same vector, so both
come from one command:
    go test -run '^$' -bench 'BenchmarkAllReduce$' -benchtime 50x ./allreduce
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

N_PARAMS = 1_950_659


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, ops, out):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.arange(N_PARAMS, dtype=torch.float32).remainder_(1000).mul_(1e-3)
    times = []
    cpu = 0.0
    for i in range(3 + ops):
        dist.barrier()
        c0 = time.process_time()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        t1 = time.perf_counter()
        c1 = time.process_time()
        if i >= 3:
            times.append(t1 - t0)
            cpu += c1 - c0
    out.put((rank, times, cpu / ops))
    dist.barrier()
    dist.destroy_process_group()


def measure(world, ops):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, ops, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in range(world)]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            sys.exit(f"gloo rank exited with {p.exitcode}")
    times = next(t for r, t, _ in results if r == 0)
    cpu = sum(c for _, _, c in results)
    return statistics.mean(times), statistics.median(times), cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="2,3,4")
    ap.add_argument("--ops", type=int, default=20)
    ap.add_argument("--go", action="store_true", help="also run the Go benchmark")
    args = ap.parse_args()

    nbytes = 4 * N_PARAMS
    print(f"gloo all_reduce(sum) of {N_PARAMS} float32 ({nbytes/1e6:.1f} MB), {args.ops} timed ops per world size")
    for world in (int(w) for w in args.worlds.split(",")):
        mean, p50, cpu = measure(world, args.ops)
        bus = 2 * (world - 1) / world * nbytes / mean / 1e9
        print(f"gloo world={world}: {mean*1e3:7.2f} ms/op  {p50*1e3:7.2f} p50-ms  {bus:5.2f} bus-GB/s  {cpu*1e3:6.2f} cpu-ms/op", flush=True)
    if args.go:
        root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        cmd = ["go", "test", "-run", "^$", "-bench", "BenchmarkAllReduce$", "-benchtime", "50x", "./allreduce"]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=root, check=True)


if __name__ == "__main__":
    main()
