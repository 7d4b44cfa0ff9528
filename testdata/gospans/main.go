// Serves two kinds of requests, each a root span of the OpenTelemetry Go
// SDK wrapped by Grafana's otel-profiling-go, which sets the goroutine's
// pprof labels span_id and span_name for the span's lifetime: the way Go
// services get span profiles in Grafana. Prints "KIND SPANID" for each
// span (the test asks Pyroscope for those spans), and "ready" first.
// Usage: gospans SECONDS
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	otelpyroscope "github.com/grafana/otel-profiling-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
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
func betweenRequests() { burn(15 * time.Millisecond) }

func serve(tracer trace.Tracer, kind string, work func()) {
	ctx, span := tracer.Start(context.Background(), kind)
	_ = ctx
	work()
	fmt.Printf("%s %s\n", kind, span.SpanContext().SpanID())
	span.End()
}

func main() {
	seconds, _ := strconv.ParseFloat(os.Args[1], 64)
	provider := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(otelpyroscope.NewTracerProvider(provider))
	tracer := otel.Tracer("gospans")
	fmt.Println("ready")
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(end) {
		serve(tracer, "checkout", checkout)
		serve(tracer, "search", search)
		betweenRequests()
	}
}
