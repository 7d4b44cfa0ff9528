// Serves two kinds of requests, each under its own trace context, through
// the smolder Go SDK: checkout under a W3C traceparent, search under a B3
// header; between requests it spins with no context.
// Usage: gotrace SECONDS
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	smoldertrace "smolder.dev/sdk/go"
)

const (
	checkoutHeader = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	searchHeader   = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
)

var sink uint64

//go:noinline
func burn(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := uint64(0); i < 10000; i++ {
			sink += i * 7
		}
	}
}

//go:noinline
func checkout() { burn(30 * time.Millisecond) }

//go:noinline
func search() { burn(20 * time.Millisecond) }

//go:noinline
func between_requests() { burn(15 * time.Millisecond) }

func main() {
	seconds := 5.0
	if len(os.Args) > 1 {
		seconds, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	served := 0
	for time.Now().Before(end) {
		if err := smoldertrace.DoHeader(checkoutHeader, checkout); err != nil {
			panic(err)
		}
		between_requests()
		if err := smoldertrace.DoHeader(searchHeader, search); err != nil {
			panic(err)
		}
		between_requests()
		served += 2
	}
	fmt.Println(served, "requests")
}
