package ring

import (
	"fmt"
	"math"
)

// Default values of the Config fields, used for fields left at zero.
const (
	DefaultPartitionCount    = 271
	DefaultReplicationFactor = 20
	DefaultLoad              = 1.25

	// MaxPartitionCount and MaxReplicationFactor bound the table sizes, so a
	// mistyped config fails fast instead of exhausting memory.
	MaxPartitionCount    = 1 << 20
	MaxReplicationFactor = 1 << 12
)

// Config shapes a ring. Every node of a cluster must build its rings with
// the same Config: the partition table, and so the owner of every key,
// depends on it.
type Config struct {
	// PartitionCount is the number of partitions keys are hashed into; a
	// key's partition is xxhash64(key) mod PartitionCount, and ownership is
	// decided per partition. A prime spreads keys best. It bounds the member
	// count: a ring has at most PartitionCount members. At most
	// MaxPartitionCount. Default 271.
	PartitionCount int

	// ReplicationFactor is the number of virtual nodes each member places on
	// the hash circle: more virtual nodes give a more even spread and cost
	// memory and build time. Must be at least 2 (the placement library
	// never looks at one of the virtual nodes when it searches for room, so
	// a member with a single one could be passed over and the build fail).
	// It has nothing to do with data replication. At most
	// MaxReplicationFactor. Default 20.
	ReplicationFactor int

	// Load is the bounded-load factor: no member owns more than
	// ceil(floor(PartitionCount/members) × Load) partitions, and a
	// partition whose first choice is full goes to the next member on the
	// circle with room. Must be finite and greater than 1 (at exactly 1 the
	// partitions would not fit whenever the member count does not divide
	// PartitionCount). Smaller is more even; larger moves fewer partitions
	// between the members that stay when membership changes (see the
	// package doc). Default 1.25.
	Load float64
}

// DefaultConfig returns the configuration a cluster uses unless it has a
// reason not to: 271 partitions, 20 virtual nodes per member, load 1.25.
func DefaultConfig() Config {
	return Config{
		PartitionCount:    DefaultPartitionCount,
		ReplicationFactor: DefaultReplicationFactor,
		Load:              DefaultLoad,
	}
}

// withDefaults returns a copy of c with zero fields set to their defaults,
// validated. The caller's value is never modified (c is a copy).
func (c Config) withDefaults() (Config, error) {
	if c.PartitionCount == 0 {
		c.PartitionCount = DefaultPartitionCount
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.PartitionCount < 0 || c.PartitionCount > MaxPartitionCount {
		return Config{}, fmt.Errorf("%w: PartitionCount must be > 0 and <= %d (got %d)", ErrInvalidConfig, MaxPartitionCount, c.PartitionCount)
	}
	if c.ReplicationFactor < 2 || c.ReplicationFactor > MaxReplicationFactor {
		return Config{}, fmt.Errorf("%w: ReplicationFactor must be >= 2 and <= %d (got %d)", ErrInvalidConfig, MaxReplicationFactor, c.ReplicationFactor)
	}
	// The comparison is written so that NaN fails it.
	if !(c.Load > 1) || math.IsInf(c.Load, 0) {
		return Config{}, fmt.Errorf("%w: Load must be a finite number > 1 (got %v)", ErrInvalidConfig, c.Load)
	}
	return c, nil
}
