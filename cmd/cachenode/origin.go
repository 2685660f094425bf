package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/worker"
)

// defaultMaxSize bounds an origin's body unless max_size says otherwise.
const defaultMaxSize = 16 << 20

// newOriginClient returns the HTTP client shared by every origin getter of
// a process: keep-alive connections reused across fills, dial and
// response-header timeouts, no proxy (origins are internal services). The
// deadline of each request is the fill's context.
func newOriginClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errTooManyRedirects
			}
			return nil
		},
	}
}

// originGetter fills a worker by GET origin?arg=value&...: arguments are
// query parameters (a list repeats its parameter), a 2xx body is the value
// and its Content-Type is kept with it. Any other status, a transport error
// or a body over maxSize is an error, which the worker wraps in
// worker.ErrFill and never caches.
type originGetter struct {
	shown   string // the origin with its secrets redacted, for logs and the admin endpoints
	base    *url.URL
	client  *http.Client
	maxSize int64
	agent   string
	tracer  trace.Tracer // nil: no spans, no traceparent sent
}

func newOriginGetter(raw string, client *http.Client, maxSize int64, agent string) (*originGetter, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if maxSize <= 0 {
		maxSize = defaultMaxSize
	}
	return &originGetter{shown: redactURL(u), base: u, client: client, maxSize: maxSize, agent: agent}, nil
}

// Origin returns the origin URL with its secrets redacted, for the logs and
// the admin endpoints.
func (g *originGetter) Origin() string { return g.shown }

// redacted stands for a secret of an origin URL.
const redacted = "xxxxx"

// redactURL is u without what could be a secret: the whole userinfo (a
// token is often the user name) and every query value (api_key=...); the
// names of query parameters stay, and so do the scheme, host and path.
func redactURL(u *url.URL) string {
	r := *u
	if r.User != nil {
		r.User = url.User(redacted)
	}
	if r.RawQuery != "" {
		q := r.Query()
		for name, vs := range q {
			for i := range vs {
				vs[i] = redacted
			}
			q[name] = vs
		}
		r.RawQuery = q.Encode()
	}
	r.Fragment, r.RawFragment = "", ""
	return r.String()
}

// transportError describes an origin request that got no answer by its
// kind alone. The error of http.Client.Do holds the request's URL, with the
// origin's query secrets and the read's arguments: it must not reach a
// client, a peer or a log. A cancelled or expired fill keeps its context
// error, which decides the 504 fill_timeout.
func transportError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("origin unreachable: %w", cerr)
	}
	var (
		ne   net.Error
		dns  *net.DNSError
		cert *tls.CertificateVerificationError
		rec  tls.RecordHeaderError
	)
	kind := "request failed"
	switch {
	case errors.Is(err, errTooManyRedirects):
		kind = "redirected more than 3 times"
	case errors.As(err, &dns):
		kind = "host not found"
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		kind = "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		kind = "host unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	case errors.As(err, &cert):
		kind = "TLS certificate not trusted"
	case errors.As(err, &rec):
		kind = "TLS handshake failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = "connection closed"
	}
	return fmt.Errorf("origin unreachable: %s", kind)
}

var errTooManyRedirects = errors.New("origin: more than 3 redirects")

// Get asks the origin for the value of args.
func (g *originGetter) Get(ctx context.Context, args worker.Args) (v worker.Value, err error) {
	if g.tracer != nil {
		var span trace.Span
		ctx, span = g.tracer.Start(ctx, "cachenode.origin", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("http.request.method", http.MethodGet), attribute.String("url.full", g.shown)))
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	u := *g.base
	q := u.Query()
	names := make([]string, 0, len(args))
	for name := range args {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := addArg(q, name, args[name]); err != nil {
			return worker.Value{}, err
		}
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return worker.Value{}, errors.New("origin: cannot build the request")
	}
	req.Header.Set("User-Agent", g.agent)
	if g.tracer != nil {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return worker.Value{}, transportError(ctx, err)
	}
	defer resp.Body.Close()
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Read a little so that the connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			// The origin asks us to slow down: the worker's limiter
			// pauses it and the caller is told origin_busy.
			return worker.Value{}, &worker.BackPressureError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		}
		// The code only: the reason phrase is the origin's text.
		return worker.Value{}, fmt.Errorf("origin answered %d", resp.StatusCode)
	}
	if resp.ContentLength > g.maxSize {
		return worker.Value{}, fmt.Errorf("origin body of %d bytes is over the limit of %d", resp.ContentLength, g.maxSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, g.maxSize+1))
	if err != nil {
		return worker.Value{}, fmt.Errorf("origin: reading the body: %w", transportError(ctx, err))
	}
	if int64(len(body)) > g.maxSize {
		return worker.Value{}, fmt.Errorf("origin body is over the limit of %d bytes", g.maxSize)
	}
	return worker.Value{Data: body, ContentType: resp.Header.Get("Content-Type")}, nil
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		return max(time.Duration(s)*time.Second, 0)
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// addArg writes one argument as query parameters. Arguments that come from
// HTTP reads are strings and lists of strings; those rebuilt from records or
// given in Go may be other scalars, written in their plain text form.
func addArg(q url.Values, name string, v any) error {
	if l, ok := v.([]any); ok {
		for _, x := range l {
			if err := addArg(q, name, x); err != nil {
				return err
			}
		}
		return nil
	}
	s, err := argText(v)
	if err != nil {
		return fmt.Errorf("argument %s: %w", name, err)
	}
	q.Add(name, s)
	return nil
}

func argText(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case nil:
		return "", nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case []string:
		return "", errors.New("nested lists cannot be query parameters")
	}
	return fmt.Sprint(v), nil
}
