package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cachenode/cachenode/worker"
)

// A read on one node of a key another node owns, carrying a W3C
// traceparent, is one trace: the asking node's read and its fetch, the
// owner's answer and its origin request, each the child of the one before,
// and the origin gets the traceparent of the last. Over HTTP the
// traceparent is the request's header; over RESP, CN.TRACEPARENT before the
// GET (sent by rueidis in one pipeline). Each node records its spans with
// the SDK's in-memory recorder.
func TestTraceSpansAskerOwnerAndOrigin(t *testing.T) {
	var mu sync.Mutex
	originTP := map[string]string{} // by id
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		originTP[r.URL.Query().Get("id")] = r.Header.Get("traceparent")
		mu.Unlock()
		fmt.Fprintf(w, "value of %s", r.URL.Query().Get("id"))
	}))
	defer origin.Close()

	start := func(name, join string) (*running, *tracetest.SpanRecorder) {
		t.Helper()
		cfg := fmt.Sprintf("name: %s\ngossip: 127.0.0.1:0\npeer: 127.0.0.1:0\nhttp: 127.0.0.1:0\ndata: \"\"\nresp: 127.0.0.1:0\nmembership: local\n"+
			"workers:\n  w:\n    origin: %s/v\n", name, origin.URL)
		if join != "" {
			cfg += "join: [" + join + "]\n"
		}
		path := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		rec := tracetest.NewSpanRecorder()
		rc.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		r, err := startNode(rc, slog.New(slog.DiscardHandler), newOriginClient())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.stop(5 * time.Second) })
		return r, rec
	}
	a, recA := start("a", "")
	b, recB := start("b", a.node.GossipAddr())
	deadline := time.Now().Add(20 * time.Second)
	for a.node.Ring().Len() != 2 || b.node.Ring().Len() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the ring of two did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ids []string // two keys of b
	for i := 0; i < 200 && len(ids) < 2; i++ {
		if k, _ := worker.KeyOf("w", worker.Args{"id": fmt.Sprint(i)}); a.node.Owner(k) == "b" {
			ids = append(ids, fmt.Sprint(i))
		}
	}
	if len(ids) < 2 {
		t.Fatal("not two keys of b among 200")
	}

	const httpTrace, respTrace = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest(http.MethodGet, a.httpURL+"/v1/cache/w?id="+ids[0], nil)
	req.Header.Set("traceparent", "00-"+httpTrace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache-Owner") != "b" || resp.Header.Get("X-Cache") != "miss" {
		t.Fatalf("read answered %d, owner %q, %q", resp.StatusCode, resp.Header.Get("X-Cache-Owner"), resp.Header.Get("X-Cache"))
	}
	last := checkTrace(t, recA, recB, "cachenode.get", httpTrace, "00f067aa0ba902b7")
	originGot := func(id, traceID, span string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if got := originTP[id]; !strings.HasPrefix(got, "00-"+traceID+"-"+span+"-") {
			t.Errorf("the origin got traceparent %q for id %s, want the origin span's (%s in %s)", got, id, span, traceID)
		}
	}
	originGot(ids[0], httpTrace, last)

	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{a.respAddr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	res := rc.DoMulti(context.Background(),
		rc.B().Arbitrary("CN.TRACEPARENT").Args("00-"+respTrace+"-b7ad6b7169203331-01").Build(),
		rc.B().Get().Key("w?id="+ids[1]).Build())
	if err := res[0].Error(); err != nil {
		t.Fatal(err)
	}
	if v, err := res[1].ToString(); err != nil || v != "value of "+ids[1] {
		t.Fatalf("GET answered %q, %v", v, err)
	}
	originGot(ids[1], respTrace, checkTrace(t, recA, recB, "cachenode.resp.get", respTrace, "b7ad6b7169203331"))
	if err := rc.Do(context.Background(), rc.B().Arbitrary("CN.TRACEPARENT").Args("nonsense").Build()).Error(); err == nil ||
		!strings.Contains(err.Error(), "traceparent") {
		t.Errorf("CN.TRACEPARENT nonsense answered %v, want an error", err)
	}
}

// checkTrace checks the spans of trace traceID: on a, first (the read, a
// child of the caller's span parent) and cachenode.peer.fetch; on b,
// cachenode.peer.serve and cachenode.origin; each the child of the one
// before. It returns the span ID of the last, the origin request's.
func checkTrace(t *testing.T, recA, recB *tracetest.SpanRecorder, first, traceID, parent string) string {
	t.Helper()
	spans := func(rec *tracetest.SpanRecorder) map[string]sdktrace.ReadOnlySpan {
		out := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == traceID {
				out[s.Name()] = s
			}
		}
		return out
	}
	// The owner's spans end before its answer; the asker's right after.
	deadline := time.Now().Add(10 * time.Second)
	for len(spans(recA)) < 2 || len(spans(recB)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("spans of trace %s on a: %v, on b: %v", traceID, names(recA), names(recB))
		}
		time.Sleep(5 * time.Millisecond)
	}
	sa, sb := spans(recA), spans(recB)
	chain := []struct {
		span sdktrace.ReadOnlySpan
		kind trace.SpanKind
		on   string
	}{
		{sa[first], trace.SpanKindServer, "a"},
		{sa["cachenode.peer.fetch"], trace.SpanKindClient, "a"},
		{sb["cachenode.peer.serve"], trace.SpanKindServer, "b"},
		{sb["cachenode.origin"], trace.SpanKindClient, "b"},
	}
	for _, c := range chain {
		if c.span == nil {
			t.Fatalf("a span of trace %s is missing on %s: a has %v, b has %v", traceID, c.on, names(recA), names(recB))
		}
		if got := c.span.Parent().SpanID().String(); got != parent {
			t.Errorf("%s on %s has parent %s, want %s", c.span.Name(), c.on, got, parent)
		}
		if c.span.SpanKind() != c.kind {
			t.Errorf("%s is a %v span, want %v", c.span.Name(), c.span.SpanKind(), c.kind)
		}
		parent = c.span.SpanContext().SpanID().String()
	}
	return parent
}

func names(rec *tracetest.SpanRecorder) []string {
	var out []string
	for _, s := range rec.Ended() {
		out = append(out, s.Name())
	}
	return out
}

// The binary with tracing.otlp sends its spans to that OTLP/HTTP endpoint,
// as protobuf, through the SDK's exporter: here a collector of the test
// decodes them with the OTLP protocol's own types. A read's span and its
// origin request's arrive in the read's trace, at the latest when the
// process stops (the batcher's flush).
func TestBinaryExportsSpansOverOTLP(t *testing.T) {
	bin := buildBinary(t)
	var mu sync.Mutex
	spans := map[string]string{} // name → trace ID
	service := ""
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans[s.Name] = hex.EncodeToString(s.TraceId)
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer collector.Close()
	origin := httptest.NewServer(newE2EOrigin())
	defer origin.Close()
	p := startProc(t, bin, "t1", nodeConfig("t1", origin.URL, "", nil)+"tracing:\n  otlp: "+collector.URL+"/v1/traces\n")

	const traceID = "5bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodGet, p.http+"/v1/cache/items?id=1", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("read answered %d", resp.StatusCode)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"cachenode.get", "cachenode.origin"} {
		if spans[name] != traceID {
			t.Errorf("span %s exported in trace %q, want %s (exported: %v)", name, spans[name], traceID, spans)
		}
	}
	if service != "cachenode" {
		t.Errorf("service.name %q, want cachenode", service)
	}
}
