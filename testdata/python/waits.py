"""A server's threads waiting in the ways servers wait, each in a function of
its own, or contending for the GIL. Usage:

    waits.py SECONDS waits   # sleeper, locker and reader block; holder and
                             # writer make the lock and the socket wait
    waits.py SECONDS gil     # two spinner threads compute in pure Python

Once its threads run it prints `NAME TID` for each, then `ready`; at exit
`NAME TID WALL_NS CPU_NS` for each measured thread, so a test can find the
threads by tid and tell their blocked time (wall - CPU).
"""

import socket
import sys
import threading
import time

clocks = []
clocks_lock = threading.Lock()


def timed(name, body, seconds):
    """Runs body(end) in a thread named `name`, recording its clocks."""

    def run():
        wall = time.monotonic_ns()
        cpu = time.thread_time_ns()
        body(time.monotonic() + seconds)
        with clocks_lock:
            clocks.append(
                (
                    name,
                    threading.get_native_id(),
                    time.monotonic_ns() - wall,
                    time.thread_time_ns() - cpu,
                )
            )

    return threading.Thread(target=run, name=name)


def nap():
    time.sleep(0.005)


def sleeper(end):
    while time.monotonic() < end:
        nap()


lock = threading.Lock()


def hold():
    time.sleep(0.020)


def holder(end):
    while time.monotonic() < end + 0.1:
        with lock:
            hold()
        time.sleep(0.0001)


def wait_for_lock():
    with lock:
        pass


def pause():
    # Lets the holder take the lock back (an unfair relock could swap roles).
    time.sleep(0.0002)


def locker(end):
    while time.monotonic() < end:
        wait_for_lock()
        pause()


server, client = socket.socketpair()


def writer(end):
    while time.monotonic() < end + 0.1:
        time.sleep(0.010)
        client.send(b"x")


def wait_for_socket():
    return server.recv(1)


def reader(end):
    while time.monotonic() < end:
        wait_for_socket()


def spin(end):
    n = 0
    while time.monotonic() < end:
        for i in range(1000):
            n = (n * 31 + i) % 1000003
    return n


def main():
    seconds = float(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "waits"
    if mode == "waits":
        threads = [
            timed("sleeper", sleeper, seconds),
            timed("locker", locker, seconds),
            timed("reader", reader, seconds),
            threading.Thread(target=holder, args=(time.monotonic() + seconds,), name="holder"),
            threading.Thread(target=writer, args=(time.monotonic() + seconds,), name="writer"),
        ]
    else:
        # Names longer than an OS thread name (15 bytes).
        threads = [timed(f"spinner-thread-number-{i}", spin, seconds) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        print(t.name, t.native_id)
    print("ready", flush=True)
    for t in threads:
        t.join()
    for name, tid, wall, cpu in clocks:
        print(name, tid, wall, cpu)


if __name__ == "__main__":
    main()
