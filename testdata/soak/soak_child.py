"""A short-lived Python process of the soak's churn: spins, then exits."""
import sys
import time


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


spin(float(sys.argv[1]) / 1000)
