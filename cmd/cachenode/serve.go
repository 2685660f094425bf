package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/node/resp"
)

// running is a started node with its HTTP server.
type running struct {
	node    *node.Node
	api     *httpapi.Server
	http    *http.Server
	ln      net.Listener
	log     *slog.Logger
	served  chan error // the HTTP server's end
	httpURL string
	sources *sources // change sources (sources.go); nil without any
	// resp is the RESP front (nil when off), respAddr its bound address.
	resp     *resp.Server
	respAddr string
	// stopTracer sends the buffered spans and stops the tracer provider.
	stopTracer func(context.Context) error
}

// startNode builds, starts and serves one node. Configuration errors are
// usageErrors (exit 2); anything else is a failure to start (exit 1).
func startNode(rc *runConfig, log *slog.Logger, origins *http.Client) (*running, error) {
	metrics := httpapi.NewMetrics()
	nc := rc.Node
	nc.Logger = log
	nc.OnPeerCall = metrics.ObservePeerCall
	tp, stopTracer, err := newTracer(rc)
	if err != nil {
		return nil, err
	}
	nc.Tracer = tp
	// Listen on HTTP first: the published address must carry the real port
	// when the config asks for port 0.
	ln, err := net.Listen("tcp", rc.HTTP)
	if err != nil {
		stopTracer(context.Background())
		return nil, fmt.Errorf("http: %w", err)
	}
	nc.HTTP = advertisedHTTP(rc, ln.Addr().(*net.TCPAddr))
	n, err := node.New(nc)
	if err != nil {
		ln.Close()
		stopTracer(context.Background())
		if errors.Is(err, node.ErrConfig) {
			return nil, usageError{err.Error()}
		}
		return nil, err
	}
	fail := func(err error) (*running, error) {
		ln.Close()
		n.Close()
		stopTracer(context.Background())
		return nil, err
	}
	agent := "cachenode/" + version() + " (" + nc.Name + ")"
	for _, label := range sortedKeys(rc.Workers) {
		wc := rc.Workers[label]
		g, err := newOriginGetter(wc.origin(), origins, int64(wc.MaxSize), agent)
		if err != nil {
			return fail(usagef("workers.%s.origin: not a URL", label)) // the error would repeat it, secrets and all
		}
		if tp != nil {
			g.tracer = tp.Tracer("github.com/cachenode/cachenode/cmd/cachenode")
		}
		host, _ := originHost(wc.origin()) // checked by resolve
		if _, err := n.Cache().Register(wc.workerDef(label, n.Cache().Defaults(), metrics.WrapGetter(label, g), rc.Limiters[host])); err != nil {
			return fail(usagef("workers.%s: %v", label, err))
		}
	}
	for _, model := range sortedKeys(rc.Rules) {
		if err := n.RegisterRules(model, rulesOf(rc.Rules[model])); err != nil {
			return fail(usagef("invalidation.%s: %v", model, err))
		}
	}
	api, err := httpapi.New(httpapi.Config{Node: n, Token: rc.Token, Insecure: rc.OpenHTTP, Metrics: metrics, Logger: log,
		MaxConcurrentRequests: rc.MaxConcurrentRequests, Tracer: tp})
	if err != nil {
		return fail(err)
	}
	var respLn net.Listener
	if rc.RESP != "" {
		if respLn, err = net.Listen("tcp", rc.RESP); err != nil {
			return fail(fmt.Errorf("resp: %w", err))
		}
	}
	if err := n.Start(); err != nil {
		if respLn != nil {
			respLn.Close()
		}
		return fail(err)
	}
	srcs, err := startSources(rc.Sources, n, log)
	if err != nil {
		return fail(err)
	}
	if len(rc.Sources) > 0 {
		api.SetSources(srcs.statuses)
	}
	if rc.OpenHTTP {
		log.Warn("INSECURE: the HTTP port is open to the network without an admin token (insecure: true): anyone who reaches it can invalidate every value and use the admin pages; set admin_token_file",
			"http", rc.HTTP)
	}
	r := &running{node: n, api: api, http: api.HTTPServer(rc.HTTP), ln: ln, log: log, served: make(chan error, 1), sources: srcs,
		stopTracer: stopTracer}
	scheme := "http"
	if rc.TLS.Cert != "" {
		scheme = "https"
	}
	r.httpURL = scheme + "://" + nc.HTTP
	if respLn != nil {
		if rc.OpenRESP {
			log.Warn("INSECURE: the RESP port is open to the network without an admin token (insecure: true): anyone who reaches it can invalidate every value; set admin_token_file",
				"resp", rc.RESP)
		}
		rs, err := resp.New(resp.Config{Node: n, Token: rc.Token, Logger: log, Tracer: tp})
		if err != nil {
			respLn.Close()
			return fail(err)
		}
		r.resp, r.respAddr = rs, respLn.Addr().String()
		go func() {
			if err := rs.Serve(respLn); !errors.Is(err, resp.ErrServerClosed) {
				log.Error("resp server stopped", "err", err)
			}
		}()
	}
	go func() {
		var err error
		if rc.TLS.Cert != "" {
			err = r.http.ServeTLS(ln, rc.TLS.Cert, rc.TLS.Key)
		} else {
			err = r.http.Serve(ln)
		}
		r.served <- err
	}()
	return r, nil
}

// advertisedHTTP is the HTTP address published to the other members and
// clients: http_advertise, else the bound address, with an unspecified
// host replaced by the advertised gossip host when there is one.
func advertisedHTTP(rc *runConfig, bound *net.TCPAddr) string {
	if rc.HTTPAdvertise != "" {
		return rc.HTTPAdvertise
	}
	host, _, _ := net.SplitHostPort(rc.HTTP)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = ""
		for _, a := range []string{rc.Node.Advertise, rc.Node.Gossip} {
			if h, _, err := net.SplitHostPort(a); err == nil {
				if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
					host = h
					break
				}
			}
		}
		if host == "" {
			host = bound.IP.String()
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(bound.Port))
}

// stop shuts the node down gracefully: readiness goes to 503, in-flight
// requests finish (at most grace), then the node hands off its hot
// entries, leaves the cluster, flushes its records and closes Pebble.
func (r *running) stop(grace time.Duration) error {
	r.api.Drain()
	if r.resp != nil {
		r.resp.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	if err := r.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		r.http.Close()
	}
	r.sources.stop() // releases the slots before the node leaves the ring
	if err := r.node.Close(); err != nil {
		errs = append(errs, fmt.Errorf("node close: %w", err))
	}
	if err := r.stopTracer(ctx); err != nil {
		errs = append(errs, fmt.Errorf("tracing: %w", err))
	}
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// serve runs one node until SIGINT or SIGTERM.
func serve(args []string, stderr io.Writer) int {
	rc, err := loadConfig(args, os.Getenv, stderr)
	if err != nil {
		return exitFor(err, stderr)
	}
	log := newLogger(stderr, rc.Level)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	r, err := startNode(rc, log, newOriginClient())
	if err != nil {
		return exitFor(err, stderr)
	}
	attrs := []any{"name", r.node.Name(), "http", r.httpURL, "gossip", r.node.GossipAddr(),
		"peer", r.node.PeerAddr(), "data", dataDesc(rc.Node.Data), "workers", len(rc.Workers), "version", version()}
	if r.respAddr != "" {
		attrs = append(attrs, "resp", r.respAddr)
	}
	log.Info("cachenode serving", attrs...)
	select {
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	case err := <-r.served:
		log.Error("http server stopped", "err", err)
		r.node.Close()
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- r.stop(15 * time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			log.Error("shutdown", "err", err)
			return 1
		}
		log.Info("stopped")
		return 0
	case sig := <-sigs:
		log.Warn("second signal: exiting at once", "signal", sig.String())
		return 1
	}
}

func dataDesc(dir string) string {
	if dir == "" {
		return "(in memory)"
	}
	return dir
}

// exitFor prints err on one line and returns the exit code: 2 for bad
// flags or config, 0 for -help, 1 otherwise.
func exitFor(err error, stderr io.Writer) int {
	if errors.Is(err, flagHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "cachenode: "+oneLineString(ue.msg))
		return 2
	}
	fmt.Fprintln(stderr, "cachenode: "+oneLineString(err.Error()))
	return 1
}
