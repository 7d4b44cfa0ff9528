// A Go workload with a known chain main -> a -> b -> c -> spin, none inlined.
// `gochain SECONDS [CPUPROFILE]` spins for SECONDS; with CPUPROFILE it also
// writes Go's own runtime/pprof CPU profile there, the ground truth.
package main

import (
	"math"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

var sink float64

//go:noinline
func spin() {
	for i := 0; i < 200000; i++ {
		sink += math.Sqrt(float64(i))
	}
}

//go:noinline
func c() { spin() }

//go:noinline
func b() { c() }

//go:noinline
func a() { b() }

func main() {
	seconds := 3.0
	if len(os.Args) > 1 {
		seconds, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	if len(os.Args) > 2 {
		f, err := os.Create(os.Args[2])
		if err != nil {
			panic(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			panic(err)
		}
		defer pprof.StopCPUProfile()
	}
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(end) {
		a()
	}
}
