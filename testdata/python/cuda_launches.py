"""Launches through the CUDA runtime from Python with ctypes, as a model
server's Python code reaches PyTorch: known host functions (libc's `abs` and
`labs`, by address), a known number of times, from known Python chains.
Without a GPU every call fails at once, which is fine: the probes fire.

Usage: cuda_launches.py LIBCUDART ALPHA BETA SYNCS. Prints "ready", waits for
a line on stdin, launches over about two seconds, prints "done"."""

import ctypes
import sys
import time


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


cudart = ctypes.CDLL(sys.argv[1])
cudart.cudaLaunchKernel.argtypes = [
    ctypes.c_void_p,
    Dim3,
    Dim3,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_size_t,
    ctypes.c_void_p,
]
cudart.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
libc = ctypes.CDLL(None)
ALPHA_FN = ctypes.cast(libc.abs, ctypes.c_void_p).value
BETA_FN = ctypes.cast(libc.labs, ctypes.c_void_p).value
GRID, BLOCK = Dim3(1, 1, 1), Dim3(32, 1, 1)
ARGS = (ctypes.c_void_p * 1)()


def launch_attention():
    return cudart.cudaLaunchKernel(ALPHA_FN, GRID, BLOCK, ARGS, 0, None)


def launch_mlp():
    return cudart.cudaLaunchKernel(BETA_FN, GRID, BLOCK, ARGS, 0, None)


def synchronize():
    return cudart.cudaStreamSynchronize(None)


def decode_step(i, steps, alpha, beta, syncs):
    for _ in range(alpha * i // steps, alpha * (i + 1) // steps):
        launch_attention()
    for _ in range(beta * i // steps, beta * (i + 1) // steps):
        launch_mlp()
    for _ in range(syncs * i // steps, syncs * (i + 1) // steps):
        synchronize()


def main():
    alpha, beta, syncs = (int(a) for a in sys.argv[2:5])
    print("ready", flush=True)
    sys.stdin.readline()
    steps = 200
    for i in range(steps):
        decode_step(i, steps, alpha, beta, syncs)
        time.sleep(0.01)
    print("done", flush=True)


main()
