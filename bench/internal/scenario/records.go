package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/worker"
)

// benchRecord is the created-cache record of key number i of caller c.
func benchRecord(c, i int, now time.Time) persist.Record {
	id := fmt.Sprintf("c%d-%d", c, i)
	return persist.Record{
		Label:       Label,
		Key:         Label + `@id=s"` + id + `"`,
		Args:        map[string]any{"id": id},
		Match:       map[string][]string{"id": {id}},
		Owner:       "n1",
		CreatedAt:   now,
		AvailableTo: now.Add(time.Hour),
		Size:        100,
	}
}

// RecordsStore measures persist.Store writes of distinct records in a
// Pebble directory under dir: with async, PutAsync (delay_logging) from
// opts.Callers producers, which retry after a short pause when the queue is
// full; else Put, each caller waiting for its record to be durable (group
// commit). Ops/s is the records the store committed per second, the Flush
// of the async queue included; the latencies are those of the calls.
func RecordsStore(ctx context.Context, opts Options, dir string, async bool) (*load.Result, error) {
	opts = opts.withDefaults()
	path, err := os.MkdirTemp(dir, "records-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(path)
	st, err := persist.Open(persist.Config{Dir: filepath.Join(path, "db"), SweepInterval: -1})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	name := "records-put"
	if async {
		name = "records-put-async"
	}
	var full = make([]int64, opts.Callers)
	start := time.Now()
	r := load.Run(ctx, load.Config{Name: name, Callers: opts.Callers, Duration: opts.Duration, Progress: opts.Progress},
		func(ctx context.Context, c, i int) error {
			rec := benchRecord(c, i, time.Now())
			if !async {
				return st.Put(rec)
			}
			for {
				err := st.PutAsync(rec)
				if !errors.Is(err, persist.ErrQueueFull) {
					return err
				}
				full[c]++
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Microsecond):
				}
			}
		})
	if err := st.Flush(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	stats := st.Stats()
	written := int64(stats.WrittenSync + stats.WrittenAsync)
	r.Scenario, r.System, r.Nodes = name, "cachenode", 1
	r.Figure("records_written", float64(written))
	r.Figure("records_per_sec", float64(written)/elapsed.Seconds())
	r.Figure("batches", float64(stats.Batches))
	var waits int64
	for _, f := range full {
		waits += f
	}
	if waits > 0 {
		// The store counts these in Stats.Dropped; none is lost, since the
		// producer retries them.
		r.Note("%d PutAsync calls found the queue full and were retried", waits)
	} else if stats.Dropped > 0 {
		r.Note("%d records dropped", stats.Dropped)
	}
	return r, nil
}

// RecordsFills measures fills of distinct keys on a one-node cluster whose
// records live in a Pebble directory under dir, with the bench worker's
// delay_logging set to delayLogging: each Get is a fill that writes its
// created-cache record (in the background with delay_logging).
func RecordsFills(ctx context.Context, opts Options, dir string, delayLogging bool) (*load.Result, error) {
	opts = opts.withDefaults()
	path, err := os.MkdirTemp(dir, "fills-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(path)
	c, err := StartCluster(ctx, ClusterConfig{
		Size: 1, Membership: SteadyMembership(), ValueSize: opts.ValueSize, Logger: opts.Logger,
		Data: func(int) string { return filepath.Join(path, "db") },
		Setup: func(n *node.Node) error {
			_, err := n.Cache().Register(worker.Config{
				Label:    "logged",
				Settings: worker.Settings{Expires: time.Hour, DelayLogging: worker.Bool(delayLogging)},
				Getter: worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
					return worker.Value{Data: Value(fmt.Sprint(args["id"]), opts.ValueSize)}, nil
				}),
			})
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	n := c.Nodes[0]
	name := "records-fill-sync"
	if delayLogging {
		name = "records-fill-delay-logging"
	}
	start := time.Now()
	r := load.Run(ctx, load.Config{Name: name, Callers: opts.Callers, Duration: opts.Duration, Progress: opts.Progress},
		func(ctx context.Context, caller, i int) error {
			_, st, err := n.Get(ctx, "logged", worker.Args{"id": fmt.Sprintf("c%d-%d", caller, i)}, worker.Settings{})
			if err == nil && st != worker.Miss {
				return fmt.Errorf("fill answered %v", st)
			}
			return err
		})
	if err := n.Store().Flush(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	stats := n.Store().Stats()
	written := int64(stats.WrittenSync + stats.WrittenAsync)
	r.Scenario, r.System, r.Nodes = name, "cachenode", 1
	r.Fills = r.Ops
	r.Figure("records_written", float64(written))
	r.Figure("records_per_sec", float64(written)/elapsed.Seconds())
	if stats.Dropped > 0 {
		r.Note("%d records dropped (async queue full)", stats.Dropped)
	}
	return r, nil
}
