// Recurses DEPTH frames deep, then spins in a frameless leaf for SECONDS:
// Go stacks of a known depth, for the unwinder's cost per frame. Each
// frame holds 256 bytes, so that the goroutine's stack grows (and the
// runtime copies it elsewhere) several times on the way down.
// `godeep DEPTH SECONDS`.
package main

import (
	"os"
	"strconv"
	"time"
)

var sink uint64

//go:noinline
func spin(n int) {
	for i := 0; i < n; i++ {
		sink += uint64(i) * uint64(i)
	}
}

//go:noinline
func recurse(depth int, end time.Time) int {
	var pad [256]byte
	pad[depth%len(pad)] = byte(depth)
	if depth > 0 {
		return recurse(depth-1, end) + int(pad[depth%len(pad)])
	}
	for time.Now().Before(end) {
		spin(100000)
	}
	return 0
}

func main() {
	depth, _ := strconv.Atoi(os.Args[1])
	seconds, _ := strconv.ParseFloat(os.Args[2], 64)
	recurse(depth, time.Now().Add(time.Duration(seconds*float64(time.Second))))
}
