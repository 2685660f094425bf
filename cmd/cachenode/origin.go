package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

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
				return errors.New("origin: more than 3 redirects")
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
	raw     string
	base    *url.URL
	client  *http.Client
	maxSize int64
	agent   string
}

func newOriginGetter(raw string, client *http.Client, maxSize int64, agent string) (*originGetter, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if maxSize <= 0 {
		maxSize = defaultMaxSize
	}
	return &originGetter{raw: raw, base: u, client: client, maxSize: maxSize, agent: agent}, nil
}

// Origin returns the origin URL, for the admin endpoints.
func (g *originGetter) Origin() string { return g.raw }

// Get asks the origin for the value of args.
func (g *originGetter) Get(ctx context.Context, args worker.Args) (worker.Value, error) {
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
		return worker.Value{}, err
	}
	req.Header.Set("User-Agent", g.agent)
	resp, err := g.client.Do(req)
	if err != nil {
		return worker.Value{}, fmt.Errorf("origin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Read a little so that the connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			// The origin asks us to slow down: the worker's limiter
			// pauses it and the caller is told origin_busy.
			return worker.Value{}, &worker.BackPressureError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		}
		return worker.Value{}, fmt.Errorf("origin answered %s", resp.Status)
	}
	if resp.ContentLength > g.maxSize {
		return worker.Value{}, fmt.Errorf("origin body of %d bytes is over the limit of %d", resp.ContentLength, g.maxSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, g.maxSize+1))
	if err != nil {
		return worker.Value{}, fmt.Errorf("origin: reading the body: %w", err)
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
