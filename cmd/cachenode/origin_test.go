package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:9000/foos":                           "http://127.0.0.1:9000/foos",
		"https://user:pass@api.example/v1?api_key=abc&x=1&x=2": "https://xxxxx@api.example/v1?api_key=xxxxx&x=xxxxx&x=xxxxx",
		"https://TOKEN@api.example/v1":                         "https://xxxxx@api.example/v1",
		"http://h/p?k=v#frag":                                  "http://h/p?k=xxxxx",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := redactURL(u); got != want {
			t.Errorf("redactURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestOriginErrorsHoldNoURL: whatever goes wrong with an origin, the
// getter's error says what kind of failure it was and holds no part of the
// request's URL (the origin's secrets, the read's arguments).
func TestOriginErrorsHoldNoURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/503":
			w.WriteHeader(503)
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		case "/hangup":
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	slowClient := newOriginClient()
	slowClient.Transport.(*http.Transport).ResponseHeaderTimeout = 50 * time.Millisecond
	for _, tc := range []struct {
		base   string
		client *http.Client
		want   string
	}{
		{srv.URL + "/503", nil, "origin answered 503"},
		{"http://" + dead + "/x", nil, "origin unreachable: connection refused"},
		{srv.URL + "/slow", slowClient, "origin unreachable: timeout"},
		{srv.URL + "/hangup", nil, "origin unreachable: connection closed"},
		{srv.URL + "/loop", nil, "origin unreachable: redirected more than 3 times"},
	} {
		c := tc.client
		if c == nil {
			c = newOriginClient()
		}
		g, err := newOriginGetter(tc.base+"?api_key=SECRETKEY", c, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Get(context.Background(), worker.Args{"who": "ARGVALUE"})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.base, err, tc.want)
		}
		for _, s := range []string{"SECRETKEY", "ARGVALUE", strings.TrimPrefix(srv.URL, "http://"), dead} {
			if err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("%s: the error %q holds %q", tc.base, err, s)
			}
		}
	}
	// A fill past its deadline keeps its context error: the HTTP API answers
	// 504 fill_timeout for it.
	g, _ := newOriginGetter(srv.URL+"/slow?api_key=SECRETKEY", newOriginClient(), 0, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.Get(ctx, worker.Args{}); !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "SECRETKEY") {
		t.Errorf("past the deadline: %v", err)
	}
}

// FuzzLimitsConfig: the limits block of the config file, as the YAML
// decoder and build read it: an error, never a panic; accepted bounds are
// usable.
func FuzzLimitsConfig(f *testing.F) {
	for _, s := range [][2]string{{"64", "8KiB"}, {"0", "1"}, {"-1", "1GiB"}, {"1e9", "2GiB"}, {"x", "8 KiB"}, {"99999999999999999999", "9223372036854775807"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, maxArgs, maxBytes string) {
		var fc fileConfig
		doc := "limits:\n  max_args: " + maxArgs + "\n  max_arg_bytes: " + maxBytes + "\n"
		if err := decodeYAML(strings.NewReader(doc), &fc); err != nil {
			return
		}
		l, err := fc.Limits.build()
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "limits.") {
				t.Fatalf("error %q: not one line naming the field", err)
			}
			return
		}
		if l.MaxArgs < 1 || l.MaxArgBytes < 1 || l.MaxArgBytes > 1<<30 || l.Validate() != nil {
			t.Fatalf("%q, %q accepted as %+v", maxArgs, maxBytes, l)
		}
	})
}
