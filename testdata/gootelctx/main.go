// A Go service whose tracer publishes the OpenTelemetry process context
// (OTEP 4719): after DELAY_MS of work, dd-trace-go starts and publishes its
// resource (service name, environment, version) in an OTEL_CTX mapping;
// the program goes on spinning.
//
//	gootelctx SECONDS DELAY_MS
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/DataDog/dd-trace-go/v2/ddtrace/tracer"
)

var sink uint64

//go:noinline
func serve() {
	for i := uint64(0); i < 1_000_000; i++ {
		sink += i
	}
}

func main() {
	seconds, _ := strconv.Atoi(os.Args[1])
	delay, _ := strconv.Atoi(os.Args[2])
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for start := time.Now(); time.Since(start) < time.Duration(delay)*time.Millisecond; {
		serve()
	}
	err := tracer.Start(
		tracer.WithService("ctx-checkout"),
		tracer.WithEnv("staging"),
		tracer.WithServiceVersion("3.1.4"),
		tracer.WithLogStartup(false),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracer:", err)
		os.Exit(1)
	}
	defer tracer.Stop()
	fmt.Println("published")
	for time.Now().Before(end) {
		serve()
	}
}
