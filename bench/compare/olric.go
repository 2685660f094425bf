package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/buraksezer/olric"
	"github.com/buraksezer/olric/config"
	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/memberlist"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/bench/internal/scenario"
)

const olricDMap = "bench"

// olricSystem is an olric cluster of embedded members in this process,
// ReplicaCount 1, used as a store the olric way: Get, and on a miss load the
// value and Put it.
type olricSystem struct {
	opts    scenario.Options
	members []*olric.Olric
	names   []string     // "host:port" of each member, as its routing table names it
	dmaps   []olric.DMap // one per member, through its embedded client
	remote  []string     // keys owned by members other than member 0
	fills   *fillCounter
	round   int
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func newOlric(ctx context.Context, opts scenario.Options) (*olricSystem, error) {
	s := &olricSystem{opts: opts, fills: newFillCounter()}
	var seed string
	for i := range opts.Nodes {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		mport, err := freePort()
		if err != nil {
			return nil, err
		}
		c := config.New("local")
		c.ReplicaCount = 1
		c.BindAddr, c.BindPort = "127.0.0.1", port
		// olric builds its logger (also memberlist's) on LogOutput.
		c.Logger, c.LogOutput = nil, io.Discard
		c.LogLevel, c.LogVerbosity = config.LogLevelError, 1
		mc := memberlist.DefaultLocalConfig()
		mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", mport, mport
		mc.Name = net.JoinHostPort(c.BindAddr, strconv.Itoa(port))
		c.MemberlistConfig = mc
		c.LeaveTimeout = 500 * time.Millisecond
		if seed != "" {
			c.Peers = []string{seed}
		} else {
			seed = net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
		}
		started := make(chan struct{})
		c.Started = func() { close(started) }
		db, err := olric.New(c)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("olric member %d: %w", i, err)
		}
		failed := make(chan error, 1)
		go func() {
			if err := db.Start(); err != nil {
				failed <- err
			}
		}()
		select {
		case <-started:
		case err := <-failed:
			s.close()
			return nil, fmt.Errorf("olric member %d: %w", i, err)
		case <-time.After(20 * time.Second):
			s.close()
			return nil, fmt.Errorf("olric member %d: not started after 20s", i)
		}
		s.members = append(s.members, db)
		s.names = append(s.names, mc.Name)
		dm, err := db.NewEmbeddedClient().NewDMap(olricDMap)
		if err != nil {
			s.close()
			return nil, err
		}
		s.dmaps = append(s.dmaps, dm)
	}
	if err := s.waitBalanced(ctx); err != nil {
		s.close()
		return nil, err
	}
	if err := s.fillRemote(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// owners returns the current owner of every partition, as member 0 sees
// the routing table (the last of a partition's primary owners).
func (s *olricSystem) owners(ctx context.Context) ([]string, error) {
	rt, err := s.members[0].NewEmbeddedClient().RoutingTable(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rt))
	for id, r := range rt {
		if int(id) >= len(out) || len(r.PrimaryOwners) == 0 {
			return nil, fmt.Errorf("olric: partition %d has no owner", id)
		}
		out[id] = r.PrimaryOwners[len(r.PrimaryOwners)-1]
	}
	return out, nil
}

// waitBalanced waits until every member owns partitions, so that keys of
// other members exist.
func (s *olricSystem) waitBalanced(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		owners, err := s.owners(ctx)
		if err == nil {
			count := map[string]int{}
			for _, o := range owners {
				count[o]++
			}
			ok := true
			for _, n := range s.names {
				ok = ok && count[n] > 0
			}
			if ok && len(count) == len(s.names) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("olric: partitions not spread over %d members after 60s (last error %v)", len(s.names), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fillRemote picks opts.Keys keys owned by members other than member 0 and
// puts their values through member 0.
func (s *olricSystem) fillRemote(ctx context.Context) error {
	owners, err := s.owners(ctx)
	if err != nil {
		return err
	}
	for i := 0; len(s.remote) < s.opts.Keys; i++ {
		id := "k" + strconv.Itoa(i)
		part := xxhash.Sum64String(olricDMap+id) % uint64(len(owners))
		if owners[part] != s.names[0] {
			s.remote = append(s.remote, id)
		}
	}
	for _, id := range s.remote {
		if err := s.dmaps[0].Put(ctx, id, scenario.Value(id, s.opts.ValueSize)); err != nil {
			return fmt.Errorf("olric: put %s: %w", id, err)
		}
	}
	return nil
}

func (s *olricSystem) name() string { return "olric" }

func (s *olricSystem) remoteHit(ctx context.Context) *load.Result {
	dm := s.dmaps[0]
	r := load.Run(ctx, load.Config{
		Name: "olric remote-hit", Callers: s.opts.Callers, Duration: s.opts.Duration,
		Warmup: s.opts.Warmup, Progress: s.opts.Progress,
	}, getLoop(s.remote, func(ctx context.Context, id string) error {
		resp, err := dm.Get(ctx, id)
		if err != nil {
			return err
		}
		b, err := resp.Byte()
		if err == nil && len(b) != s.opts.ValueSize {
			err = fmt.Errorf("olric: value of %d bytes", len(b))
		}
		return err
	}))
	r.Scenario, r.System, r.Nodes, r.Keys = scenario.RemoteHit.Name(), s.name(), len(s.members), int64(len(s.remote))
	return r
}

// stampede is the olric way of filling: each caller Gets, and on
// ErrKeyNotFound loads the value (opts.FillDelay) and Puts it.
func (s *olricSystem) stampede(ctx context.Context, keys, callers int) *load.Result {
	s.round++
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("o%d-%d", s.round, i)
	}
	get := func(ctx context.Context, caller int, id string) error {
		dm := s.dmaps[caller%len(s.dmaps)]
		_, err := dm.Get(ctx, id)
		if !errors.Is(err, olric.ErrKeyNotFound) {
			return err
		}
		s.fills.add(id)
		if s.opts.FillDelay > 0 {
			time.Sleep(s.opts.FillDelay)
		}
		return dm.Put(ctx, id, scenario.Value(id, s.opts.ValueSize))
	}
	start := time.Now()
	run := runStampede(ctx, get, ids, s.round, 0, 1, callers, start)
	r := load.NewResult(run.hist, run.Ops, time.Since(start))
	r.Scenario, r.System, r.Nodes, r.Callers, r.Errors = scenario.StampedeName(keys), s.name(), len(s.members), callers, run.Errors
	fillFigures(r, ids, s.fills.of(ids))
	r.Figure("round_ms", float64(time.Since(start).Microseconds())/1e3)
	return r
}

func (s *olricSystem) close() error {
	var errs []error
	for _, m := range s.members {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, m.Shutdown(ctx))
		cancel()
	}
	return errors.Join(errs...)
}
