package node

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the node's spans' instrumentation scope.
const tracerName = "github.com/cachenode/cachenode/node"

// startSpan starts a span of kind under ctx's, when the node traces (see
// Config.Tracer); end ends it with err. Without a tracer it costs nothing.
func (n *Node) startSpan(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, func(err error)) {
	if n.tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := n.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// traceparent returns the W3C traceparent of ctx's span, "" when it has
// none (or the node does not trace).
func (n *Node) traceparent(ctx context.Context) string {
	if n.tracer == nil {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// withTraceparent returns ctx with the remote span of the W3C traceparent
// tp as its parent; ctx when tp is empty or malformed.
func withTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
