"""The PyTorch reference model on a CUDA GPU, for `cargo xtask gpu-check`:
the ground truth that smolder's CUDA profiles are checked against.

    python3 gpu_check.py REQUESTS

Builds the model of server.py on `cuda`, warms it up and prints "ready",
then for each line read on stdin ("smolder" or "profiler") serves REQUESTS
requests (each ends in a device-to-host copy of its result, as a server's
response does), and prints one JSON line:

- "smolder": the phase smolder records; the workload's own timing of its
  waits for the GPU (the `.item()` copy of each result and a
  `torch.cuda.synchronize()`), in seconds.
- "profiler": the same requests under torch.profiler (CUPTI): the number of
  kernel launches it saw (runtime and driver launch calls) and of kernels
  run, by name.

Exits with status 3 and a message when no CUDA device is usable.
"""

import collections
import json
import sys
import time

import torch

from server import build_model, tokenize

LAUNCH_APIS = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaGraphLaunch",
)


def handle_request(model, waits):
    tokens = tokenize(4, 64).to("cuda")
    with torch.no_grad():
        out = model(tokens)
    started = time.perf_counter()
    value = out.sum().item()  # device-to-host copy: waits for the GPU
    torch.cuda.synchronize()
    waits.append(time.perf_counter() - started)
    return value


def serve(model, requests):
    waits = []
    for _ in range(requests):
        handle_request(model, waits)
    return waits


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    if not torch.cuda.is_available():
        print("no CUDA device is usable (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(3)
    model = build_model().to("cuda")
    serve(model, 20)  # warm: cuBLAS handles, caching allocator, lazy modules
    torch.cuda.synchronize()
    print(json.dumps({"ready": True, "device": torch.cuda.get_device_name()}), flush=True)
    for line in sys.stdin:
        phase = line.strip()
        if phase == "smolder":
            started = time.perf_counter()
            waits = serve(model, requests)
            print(
                json.dumps(
                    {
                        "phase": "smolder",
                        "requests": requests,
                        "seconds": time.perf_counter() - started,
                        "wait_seconds": sum(waits),
                    }
                ),
                flush=True,
            )
        elif phase == "profiler":
            activities = [
                torch.profiler.ProfilerActivity.CPU,
                torch.profiler.ProfilerActivity.CUDA,
            ]
            with torch.profiler.profile(activities=activities) as prof:
                serve(model, requests)
            launches = 0
            kernels = collections.Counter()
            for event in prof.events():
                if event.name in LAUNCH_APIS:
                    launches += 1
                if event.device_type == torch.autograd.DeviceType.CUDA:
                    kernels[event.name] += 1
            print(
                json.dumps(
                    {
                        "phase": "profiler",
                        "requests": requests,
                        "launches": launches,
                        "kernels": sum(kernels.values()),
                        "top_kernels": kernels.most_common(10),
                    }
                ),
                flush=True,
            )
        elif phase == "quit":
            return


main()
