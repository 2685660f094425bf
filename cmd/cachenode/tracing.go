package main

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newTracer returns the tracer provider of rc (nil: no tracing) and the
// function that sends the spans still buffered and stops it. With
// tracing.otlp, spans are batched to that OTLP/HTTP endpoint; the exporter
// connects lazily, so a collector that is down costs dropped spans, never a
// failed start or a slower read.
func newTracer(rc *runConfig) (trace.TracerProvider, func(context.Context) error, error) {
	none := func(context.Context) error { return nil }
	if rc.Tracer != nil {
		return rc.Tracer, none, nil
	}
	if rc.TracingOTLP == "" {
		return nil, none, nil
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(rc.TracingOTLP))
	if err != nil {
		return nil, none, usagef("tracing.otlp: %v", err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "cachenode"),
		attribute.String("service.instance.id", rc.Node.Name), attribute.String("service.version", version()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
