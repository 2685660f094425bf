// Command healthcheck asks a URL and exits 0 when it answers 200, 1
// otherwise: the HEALTHCHECK of the container image, whose distroless base
// has no shell, curl or wget.
//
//	healthcheck [-timeout 2s] [-insecure] http://127.0.0.1:8080/healthz
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	insecure := fs.Bool("insecure", false, "accept any TLS certificate (a node serving HTTPS with a certificate for another name)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck [-timeout 2s] [-insecure] URL")
		return 2
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a health check asks the process next to it, never a proxy
	if *insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 2
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck:", resp.Status)
		return 1
	}
	return 0
}
