package node

import (
	"errors"
	"testing"
	"time"

	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// TestEnsureDefaults: the zero fields take the defaults their docs give,
// the membership field by field from its preset, and a field given keeps
// its value.
func TestEnsureDefaults(t *testing.T) {
	c := Config{Name: "a", Insecure: true, Memory: 2 << 20, Membership: Membership{Preset: "local", ProbeInterval: 3 * time.Second}}
	c.EnsureDefaults()
	if c.Gossip != DefaultGossip || c.Peer != DefaultPeer || c.Memory != 2<<20 || c.Ring != ring.DefaultConfig() ||
		c.Defaults != worker.DefaultPolicy() || c.Limits != worker.DefaultLimits() || c.PeerLimits != DefaultPeerLimits() ||
		c.HandoffEntries != DefaultHandoffEntries || c.Logger == nil || c.Clock == nil {
		t.Errorf("defaults: %+v", c)
	}
	want := LocalMembership()
	want.ProbeInterval = 3 * time.Second
	if c.Membership != want {
		t.Errorf("membership %+v, want local with a 3s probe %+v", c.Membership, want)
	}
	var z Config
	z.EnsureDefaults()
	if z.Membership != LANMembership() {
		t.Errorf("zero membership: %+v, want LAN", z.Membership)
	}
	again := c
	again.EnsureDefaults()
	if again.Membership != c.Membership || again.Memory != c.Memory {
		t.Error("EnsureDefaults is not idempotent")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaulted config: %v", err)
	}
}

// TestValidateNamesTheField: every error is a *ConfigError naming the
// field as the config file writes it, and wraps ErrConfig.
func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		c     Config
		field string
	}{
		{Config{}, "name"},
		{Config{Name: "a", Gossip: "nope"}, "gossip"},
		{Config{Name: "a", Peer: "h:port"}, "peer"},
		{Config{Name: "a", Join: []string{"a:1", "b"}}, "join"},
		{Config{Name: "a", Memory: 1000}, "memory"},
		{Config{Name: "a", DataOnCorruption: "ignore"}, "data_on_corruption"},
		{Config{Name: "a", GossipKey: []byte("short")}, "gossip_key"},
		{Config{Name: "a", Membership: Membership{Preset: "wan"}}, "membership.preset"},
		{Config{Name: "a", Membership: Membership{SuspicionMult: -1}}, "membership.suspicion_mult"},
		{Config{Name: "a", PeerLimits: PeerLimits{IdleTimeout: time.Second}}, "peer_limits.idle_timeout"},
		{Config{Name: "a", Ring: ring.Config{PartitionCount: -3}}, "ring"},
		{Config{Name: "a", Limits: worker.Limits{MaxArgs: -1}}, "limits"},
		{Config{Name: "a", Gossip: "0.0.0.0:1", Peer: "127.0.0.1:0"}, "gossip"},
	} {
		tc.c.EnsureDefaults()
		err := tc.c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want a ConfigError naming %s", tc.c, err, tc.field)
		}
	}
}

// TestNewCopiesConfig: New fills defaults in its own copy, not the
// caller's struct, and keeps no slice of it.
func TestNewCopiesConfig(t *testing.T) {
	join := []string{"127.0.0.1:1"}
	c := Config{Name: "a", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Join: join}
	n, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if c.Memory != 0 || c.Membership != (Membership{}) || c.Logger != nil {
		t.Errorf("New wrote into the caller's config: %+v", c)
	}
	join[0] = "changed:1"
	if n.cfg.Join[0] != "127.0.0.1:1" {
		t.Errorf("the node shares the caller's Join slice")
	}
}
