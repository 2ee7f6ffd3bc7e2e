"""Time all-reduces over several local devices (``servesim profile --allreduce-gpus``).

A tensor-parallel layer all-reduces its attention output and its MLP output, ``tokens x
hidden`` elements, over the group's GPUs (:func:`servesim.cost.kernels.allreduce`).
These are timed here: one call of each message size over each group size asked for,
written as kernel-table rows ``op = allreduce`` (``m`` elements over ``n`` GPUs,
``bytes_per_element`` each) that ``servesim calibrate`` fits the profile's all-reduce
fields to, as it fits them to aiconfigurator's NCCL and custom all-reduce tables.

torch backend: one process per device (``torch.multiprocessing``, started fresh), the
collective through ``torch.distributed``: NCCL between CUDA devices (rank r on GPU r),
gloo between CPU processes. Each rank times its calls as the other kernels are timed
(:meth:`servesim.hardware.profiler._Torch.time`: ``CALLS_PER_TIMING`` calls captured in
a CUDA graph and replayed between CUDA events, back-to-back calls where capture fails;
the host clock on a CPU), after a barrier, and the row is the fastest rank's median: a
rank that reached the collective before its peers also timed their lateness, the last
to arrive timed the collective alone. What is timed is NCCL's all-reduce. vLLM, SGLang
and TRT-LLM run their own one-shot / two-shot kernels on small messages within a node
(NCCL above a size each sets), so on those messages their servers can be faster than
this table says.

numpy backend: one thread per "device", each summing every rank's message from shared
host arrays (a one-shot all-reduce of host memory) between two barriers. It exercises
the format, the plumbing and the calibrate round trip; its numbers mean nothing for a
GPU.

Before timing, every group checks that its all-reduce sums: rank r contributes r + 1, and
each rank must read back n (n + 1) / 2.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

CPU_MAX_ELEMENTS = 2**20
"""Largest message timed on a CPU (elements): a CPU's numbers only test the plumbing."""


class AllReduceUnavailable(RuntimeError):
    """The group asked for cannot be formed here (too few devices, no torch.distributed)."""


def check_groups(backend_name: str, device: str, gpus) -> None:
    """Refuse group sizes this machine cannot run before any kernel is timed:
    sizes below 2, and on CUDA more ranks than devices."""
    for n in gpus:
        if n < 2:
            raise AllReduceUnavailable(f"--allreduce-gpus: a group of {n} has nothing to all-reduce; "
                                       "allowed: 2 or more")
    if backend_name == "torch" and device == "cuda" and gpus:
        import torch
        count = torch.cuda.device_count()
        if max(gpus) > count:
            raise AllReduceUnavailable(f"--allreduce-gpus {max(gpus)}: this machine has {count} CUDA device(s)")


def default_groups(backend_name: str, device: str) -> tuple[int, ...]:
    """Group sizes timed when none are asked for: on CUDA devices, 2, 4, 8 ... up to
    the device count (tensor-parallel sizes are powers of two); none on a CPU."""
    if backend_name != "torch" or device != "cuda":
        return ()
    import torch
    count, sizes, n = torch.cuda.device_count(), [], 2
    while n <= count:
        sizes.append(n)
        n *= 2
    return tuple(sizes)


def time_allreduce(backend_name: str, device: str, n: int, elements, warmup: int, repeat: int) -> dict:
    """Seconds of one all-reduce of each message size (elements) over ``n`` ranks:
    {"seconds": [...], "bytes_per_element": ..., "device_name": ..., "version": ...}."""
    elements = [int(m) for m in elements]
    if backend_name == "numpy":
        return _numpy_allreduce(n, elements, warmup, repeat)
    if backend_name == "torch":
        return _torch_allreduce(device, n, elements, warmup, repeat)
    raise AllReduceUnavailable(f"unknown backend {backend_name!r}; allowed: torch, numpy")


def _numpy_allreduce(n: int, elements: list[int], warmup: int, repeat: int) -> dict:
    import platform

    import numpy as np
    top = max(elements)
    inputs = np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None], top, axis=1)  # rank r sends r + 1
    outputs = np.empty((n, top), dtype=np.float32)
    barrier = threading.Barrier(n)
    seconds = np.zeros((n, len(elements)))
    failures = []

    def rank(r: int) -> None:
        try:
            for j, m in enumerate(elements):
                times = []
                for i in range(warmup + max(repeat, 1)):
                    barrier.wait()
                    start = time.perf_counter()
                    _reduce(inputs[:, :m], outputs[r, :m], r)
                    barrier.wait()  # the collective ends when its last rank has its sum
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
                seconds[r, j] = statistics.median(times)
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # pragma: no cover - reported below, peers released
            failures.append(e)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise AllReduceUnavailable(f"all-reduce over {n} threads failed: {failures[0]}")
    expected = n * (n + 1) / 2
    if not (outputs[:, :top] == expected).all():
        raise AllReduceUnavailable(f"all-reduce over {n} threads did not sum to {expected}")
    return {"seconds": seconds.min(axis=0).tolist(), "bytes_per_element": 4,
            "device_name": f"cpu ({platform.processor() or platform.machine()})", "version": np.__version__}


def _reduce(inputs, out, rank: int) -> None:
    """Rank ``rank``'s one-shot reduction: the sum of every rank's message into ``out``."""
    inputs.sum(axis=0, out=out)


def _torch_allreduce(device: str, n: int, elements: list[int], warmup: int, repeat: int) -> dict:
    try:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
    except ImportError:
        raise AllReduceUnavailable("the torch backend needs PyTorch: pip install 'servesim[profile]'") from None
    if not dist.is_available():
        raise AllReduceUnavailable("this PyTorch build has no torch.distributed")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="servesim-allreduce-") as folder:
        try:
            mp.start_processes(_torch_rank, args=(n, device, elements, warmup, repeat, folder), nprocs=n,
                               join=True, start_method="spawn")
        except Exception as e:  # a rank raised or died: its message, not a traceback
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            raise AllReduceUnavailable(f"all-reduce over {n} {device} ranks failed: "
                                       f"{lines[-1] if lines else type(e).__name__}") from None
        return json.loads(Path(folder, "result.json").read_text())


def _torch_rank(rank: int, n: int, device: str, elements: list[int], warmup: int, repeat: int, folder: str) -> None:
    """One rank of :func:`_torch_allreduce` (a spawned process)."""
    import torch
    import torch.distributed as dist

    from servesim.hardware.profiler import _Torch
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"file://{folder}/rendezvous",
                            rank=rank, world_size=n)
    try:
        b = _Torch(device)
        barrier = (lambda: dist.barrier(device_ids=[rank])) if device == "cuda" else dist.barrier
        check = torch.full((8,), rank + 1.0, dtype=b.dtype, device=b.device)
        dist.all_reduce(check)
        if not bool((check == n * (n + 1) / 2).all()):
            raise RuntimeError(f"rank {rank}: all-reduce summed to {check[0].item()}, not {n * (n + 1) / 2}")
        medians = []
        for m in elements:
            x = torch.zeros(m, dtype=b.dtype, device=b.device)  # sums of zeros stay finite over every call
            barrier()
            medians.append(b.time(lambda: dist.all_reduce(x), warmup, repeat))
        fastest = torch.tensor(medians, dtype=torch.float64, device=b.device)
        dist.all_reduce(fastest, op=dist.ReduceOp.MIN)
        if rank == 0:
            result = {"seconds": fastest.tolist(), "bytes_per_element": torch.finfo(b.dtype).bits // 8,
                      "device_name": b.device_name, "version": b.version}
            Path(folder, "result.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
