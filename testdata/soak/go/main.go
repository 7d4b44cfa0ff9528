// The soak's Go process: spins for the milliseconds given, then exits.
package main

import (
	"os"
	"strconv"
	"time"
)

//go:noinline
func spin(until time.Time) (n int) {
	for time.Now().Before(until) {
		n++
	}
	return n
}

func main() {
	ms, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Exit(2)
	}
	spin(time.Now().Add(time.Duration(ms) * time.Millisecond))
}
