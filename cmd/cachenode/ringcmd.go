package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cachenode/cachenode/node/client"
	"github.com/cachenode/cachenode/node/httpapi"
)

// ringCmd prints the ring of a running node: cachenode ring --http ADDR.
func ringCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ring", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", os.Getenv("CACHENODE_HTTP"), "`HOST:PORT` (or URL) of a running node's HTTP API")
	tokenFile := fs.String("admin-token-file", os.Getenv("CACHENODE_ADMIN_TOKEN_FILE"), "`FILE` with the admin token, when the node requires one")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *addr == "" {
		fmt.Fprintln(stderr, "cachenode: ring: --http is required")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cachenode: ring: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	token := ""
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "cachenode: ring: admin-token-file: %v\n", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	info, err := fetchRing(base, token)
	if err != nil {
		fmt.Fprintf(stderr, "cachenode: ring: %v\n", err)
		return 1
	}
	printRing(stdout, info)
	return 0
}

func fetchRing(base, token string) (*client.RingInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/admin/ring", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e httpapi.Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s (%s)", resp.Status, e.Error, e.Code)
		}
		return nil, fmt.Errorf("%s", resp.Status)
	}
	var info client.RingInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("bad answer: %v", err)
	}
	return &info, nil
}

func printRing(w io.Writer, info *client.RingInfo) {
	ready := "ready"
	if !info.Ready {
		ready = "not ready"
	}
	fmt.Fprintf(w, "ring %016x · %d partitions · as seen by %s (%s)\n\n", info.Version, info.PartitionCount, info.Self, ready)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tHTTP\tGOSSIP\tPEER\tPARTITIONS\tSHARE\tKEYS")
	for _, m := range info.Members {
		name := m.Name
		if m.Name == info.Self {
			name += " *"
		}
		share, keys := "-", "-"
		if info.PartitionCount > 0 && m.State == "alive" {
			share = strconv.FormatFloat(100*float64(m.Partitions)/float64(info.PartitionCount), 'f', 1, 64) + "%"
		}
		if m.Keys != nil {
			keys = strconv.Itoa(*m.Keys)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, m.State, dash(m.HTTP), dash(m.Gossip), dash(m.Peer), m.Partitions, share, keys)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n* the node that answered; KEYS is known only for it")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
