"""A small model server on real PyTorch, the reference workload of smolder's
PyTorch tests and benchmark.

A transformer encoder is built in code with random weights (nothing is
downloaded), and requests are served in a loop behind a few named Python
functions, on CPU: serve -> handle_request -> run_model -> the model's
forward -> PyTorch's C++ operators (and MKL's kernels below them).

    python3 server.py [SECONDS] [THREADS]

SECONDS: how long to serve (0, the default: until killed). THREADS: PyTorch's
intra-op threads (default 1, so that the work stays on the serving thread).
Prints "ready" once the model is built and warm, then one line per second
with the requests served.
"""

import sys
import time

import torch


def build_model():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=256, nhead=4, dim_feedforward=1024, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    return model.eval()


def tokenize(batch_size, length):
    return torch.randn(batch_size, length, 256)


def run_model(model, tokens):
    with torch.no_grad():
        return model(tokens)


def handle_request(model, batch_size=4, length=64):
    tokens = tokenize(batch_size, length)
    out = run_model(model, tokens)
    return float(out.sum())


def serve(model, seconds):
    started = time.monotonic()
    last_report = started
    served = 0
    while seconds <= 0 or time.monotonic() - started < seconds:
        handle_request(model)
        served += 1
        now = time.monotonic()
        if now - last_report >= 1.0:
            print(f"served {served}", flush=True)
            last_report = now
    return served


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    model = build_model()
    handle_request(model)  # warm-up: the first call allocates and dispatches
    print("ready", flush=True)
    serve(model, seconds)


if __name__ == "__main__":
    main()
