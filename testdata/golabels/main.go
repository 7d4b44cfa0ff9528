// Goroutines under runtime/pprof labels: two spin in alpha() under
// worker=alpha tier=gold (pprof.Do), two in beta() under worker=beta
// (SetGoroutineLabels), two in plain() with no labels.
// Usage: golabels SECONDS
package main

import (
	"context"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

var sink [6]uint64

//go:noinline
func burn(slot int, end time.Time) {
	for time.Now().Before(end) {
		for i := uint64(0); i < 20000; i++ {
			sink[slot] += i * 3
		}
	}
}

//go:noinline
func alpha(slot int, end time.Time) { burn(slot, end) }

//go:noinline
func beta(slot int, end time.Time) { burn(slot, end) }

//go:noinline
func plain(slot int, end time.Time) { burn(slot, end) }

func main() {
	seconds, _ := strconv.ParseFloat(os.Args[1], 64)
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(3)
		slot := i
		go func() {
			defer wg.Done()
			labels := pprof.Labels("worker", "alpha", "tier", "gold")
			pprof.Do(context.Background(), labels, func(context.Context) {
				alpha(slot, end)
			})
		}()
		go func() {
			defer wg.Done()
			ctx := pprof.WithLabels(context.Background(), pprof.Labels("worker", "beta"))
			pprof.SetGoroutineLabels(ctx)
			beta(2+slot, end)
		}()
		go func() {
			defer wg.Done()
			plain(4+slot, end)
		}()
	}
	wg.Wait()
}
