// A cgo workload: Go's main.callC calls the C function c_spin.
// `gocgo SECONDS` runs for SECONDS.
package main

/*
#include <stdint.h>
static volatile uint64_t sink;
static void c_spin(void) {
	for (uint64_t i = 0; i < 1000000; i++)
		sink += i;
}
*/
import "C"

import (
	"os"
	"strconv"
	"time"
)

//go:noinline
func callC() { C.c_spin() }

func main() {
	seconds := 3.0
	if len(os.Args) > 1 {
		seconds, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(end) {
		callC()
	}
}
