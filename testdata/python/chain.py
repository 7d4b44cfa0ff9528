"""A known Python call chain for smolder's tests and benchmarks.

Every thread (the main one and THREADS workers) runs
main -> handle_request -> model_step -> tokenize for SECONDS, in pure Python,
then the process prints how many requests it served (throughput, for the
overhead benchmark).

    python3 chain.py [SECONDS] [THREADS]
"""

import sys
import threading
import time


def tokenize(text):
    total = 0
    for ch in text:
        total = (total * 31 + ord(ch)) % 1000003
    return total


def model_step(batch):
    acc = 0
    for text in batch:
        acc += tokenize(text)
    return acc


def handle_request(n):
    return model_step(["request %d %s" % (n, "x" * 200)] * 4)


def main(seconds, served):
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        handle_request(n)
        n += 1
    served.append(n)


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    served = []
    workers = [
        threading.Thread(target=main, args=(seconds, served), name=f"worker-{i}")
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    main(seconds, served)
    for w in workers:
        w.join()
    print(f"served {sum(served)} requests", flush=True)
