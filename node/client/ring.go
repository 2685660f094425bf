package client

import (
	"time"

	"github.com/cachenode/cachenode/ring"
)

// The document of GET /admin/ring: node/httpapi writes it; this client,
// `cachenode ring`, the benchmarks and the chaos runner read it.

// RingInfo is the answer of GET /admin/ring.
type RingInfo struct {
	// Self is the name of the node that answered.
	Self string `json:"self"`
	// Ready is the node's readiness (/readyz).
	Ready bool `json:"ready"`
	// Version identifies the ring (its member set and config); members
	// that agree on the ring report the same version and partitions.
	Version        uint64 `json:"version"`
	PartitionCount int    `json:"partition_count"`
	// Ring is the ring configuration, so that a client can build the same
	// ring (ring.New over the alive members).
	Ring RingConfig `json:"ring"`
	// Members is what this node knows of every member, sorted by name.
	Members []MemberInfo `json:"members"`
	// Partitions is the owner's name of every partition, by partition id.
	Partitions []string `json:"partitions"`
	// Records is the state of this node's records store.
	Records RecordsInfo `json:"records"`
}

// RecordsInfo is the state of a node's created-cache records in RingInfo.
type RecordsInfo struct {
	// State is "ok", or "degraded" while a storage fault (a full,
	// read-only or failing disk) keeps the records closed: the node serves
	// and fills from memory meanwhile, and reopens them with backoff.
	State string `json:"state"`
	// Since is when the fault began; Cause is the fault or the last reopen
	// attempt's error. Both are absent when State is "ok".
	Since *time.Time `json:"since,omitempty"`
	Cause string     `json:"cause,omitempty"`
	// ReopenAttempts counts the failed reopens of the current fault.
	ReopenAttempts uint64 `json:"reopen_attempts,omitempty"`
	// Unwritten counts the fills answered without the synchronous record
	// their worker promises, because the records were degraded.
	Unwritten uint64 `json:"unwritten"`
	// MovedAside lists where corrupt records databases were moved since
	// the node started (it then started with no records).
	MovedAside []string `json:"moved_aside,omitempty"`
}

// RingConfig is ring.Config in JSON.
type RingConfig struct {
	PartitionCount    int     `json:"partition_count"`
	ReplicationFactor int     `json:"replication_factor"`
	Load              float64 `json:"load"`
}

// Config returns the ring.Config of c.
func (c RingConfig) Config() ring.Config {
	return ring.Config{PartitionCount: c.PartitionCount, ReplicationFactor: c.ReplicationFactor, Load: c.Load}
}

// MemberInfo is one member in RingInfo.
type MemberInfo struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
	Peer   string `json:"peer"`
	HTTP   string `json:"http"`
	// State is alive, dead or left.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Partitions is the number of partitions the member owns in this
	// node's ring.
	Partitions int `json:"partitions"`
	// Keys is the number of keys the member owns and holds in memory. A
	// node only knows its own count: it is null for the other members
	// (ask their /admin/ring).
	Keys *int `json:"keys"`
}
