"""Python calling a C extension (spin_ext, built from spin_ext.c) that spins
in C: python_loop -> call_extension -> spin (C) -> spin_c -> spin_leaf.

    python3 mixed.py [SECONDS]
"""

import sys
import time

import spin_ext


def call_extension():
    return spin_ext.spin(0.05)


def python_loop(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        call_extension()


if __name__ == "__main__":
    python_loop(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
