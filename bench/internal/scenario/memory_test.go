package scenario

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// The memory scenario's Redis figure is what redis-server reports for the
// keys and values it was sent: positive, and at least the key and value
// bytes per entry.
func TestMemoryRedisCountsItsEntries(t *testing.T) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (scripts/test.sh installs it)")
		}
		t.Skip("redis-server is not on the PATH (apt-get install redis-server)")
	}
	r, err := redisEntries(context.Background(), path, MemoryConfig{N: 20000, Size: 100}, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Figures["per_entry_bytes"] < r.Figures["key_value_bytes"] || r.Figures["key_value_bytes"] < 100 {
		t.Fatalf("redis: %v per entry for %v of key and value", r.Figures["per_entry_bytes"], r.Figures["key_value_bytes"])
	}
}

// The cachenode and otter jobs measure at least the key and value bytes
// per entry, and the node's near copies cost something.
func TestMemoryJobsMeasureTheirEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	for _, job := range []MemoryJob{
		{System: "otter", Kind: "entries", N: 20000, Size: 100},
		{System: "cachenode", Kind: "entries", N: 20000, Size: 100},
	} {
		var o MemoryOutcome
		var err error
		if job.System == "otter" {
			o, err = otterEntries(job)
		} else {
			o, err = nodeEntries(job)
		}
		if err != nil {
			t.Fatal(err)
		}
		if o.KeyValue < 100 || o.Overhead <= 0 || job.System == "cachenode" && (o.EntryOverhead <= 0 || o.NearOverhead <= 0) {
			t.Errorf("%s: %+v", job.System, o)
		}
	}
}
