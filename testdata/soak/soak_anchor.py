"""The soak's long-lived Python process: about 20% of a core, every window.

Its service is the one whose windows the soak counts in Pyroscope."""
import time


def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def main():
    while True:
        spin(0.02)
        time.sleep(0.08)


if __name__ == "__main__":
    main()
