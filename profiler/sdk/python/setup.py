"""Builds the native part: the C SDK (../c) as a CPython extension, so that
the process defines `otel_thread_ctx_v1` with the TLS descriptor dialect."""

import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
C_SDK = os.path.relpath(os.path.join(HERE, "..", "c"), HERE)

setup(
    ext_modules=[
        Extension(
            "smolder_trace._native",
            sources=["src/smolder_trace/_native.c", os.path.join(C_SDK, "smolder_trace.c")],
            include_dirs=[C_SDK],
            extra_compile_args=["-mtls-dialect=gnu2", "-O2"],
        )
    ],
)
