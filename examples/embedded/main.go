// Command embedded is a small web service that embeds a cachenode node:
// the Foo service of the original Django library's README, with its two
// cached lists (all_foos, filtered_foos), backed by a SQLite database that
// every instance shares. Several instances form a cache cluster; a change
// of a Foo through any of them refreshes the affected lists on all of them.
//
//	embedded -name app1 -http 127.0.0.1:8091 -gossip 127.0.0.1:7101 -peer 127.0.0.1:7102
//	embedded -name app2 -http 127.0.0.1:8092 -gossip 127.0.0.1:7111 -peer 127.0.0.1:7112 -join 127.0.0.1:7101
//
// See README.md beside this file.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cachenode/cachenode/node"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("embedded", flag.ContinueOnError)
	var cfg Config
	var join, membership, level string
	fs.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (required)")
	fs.StringVar(&cfg.HTTP, "http", "127.0.0.1:8091", "the service's API (and the node's /admin/, /metrics, /v1/...)")
	fs.StringVar(&cfg.Gossip, "gossip", "127.0.0.1:7101", "the node's gossip address (TCP and UDP)")
	fs.StringVar(&cfg.Peer, "peer", "127.0.0.1:7102", "the node's peer-transport address")
	fs.StringVar(&join, "join", "", "gossip addresses of running instances, `ADDR,...` (none: start a cluster)")
	fs.StringVar(&cfg.DB, "db", "foos.db", "the SQLite `FILE` every instance shares (created and filled on first start)")
	fs.IntVar(&cfg.Rows, "rows", 5000, "Foos generated when the database is new")
	fs.StringVar(&cfg.Data, "data", "", "Pebble `DIR` of the node's created-cache records (empty: in memory)")
	fs.StringVar(&membership, "membership", "local", "failure detection: local (one machine) or lan")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if join != "" {
		cfg.Join = strings.Split(join, ",")
	}
	switch membership {
	case "local":
		cfg.Membership = node.LocalMembership()
	case "lan":
		cfg.Membership = node.LANMembership()
	default:
		fmt.Fprintf(os.Stderr, "embedded: -membership: %q is not local or lan\n", membership)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(os.Stderr, "embedded: -log-level: %v\n", err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	a, err := New(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "embedded: %v\n", err)
		return 1
	}
	cfg.Logger.Info("serving", "name", cfg.Name, "url", a.URL(), "admin", a.URL()+"/admin/",
		"gossip", a.Node().GossipAddr(), "db", cfg.DB)
	select {
	case sig := <-sigs:
		cfg.Logger.Info("shutting down (a second signal exits at once)", "signal", sig.String())
		go func() {
			<-sigs
			os.Exit(1)
		}()
	case err := <-a.Done():
		cfg.Logger.Error("http server stopped", "err", err)
	}
	if err := a.Close(); err != nil {
		cfg.Logger.Error("shutdown", "err", err)
		return 1
	}
	return 0
}
