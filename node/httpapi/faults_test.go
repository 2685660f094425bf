package httpapi

import (
	"encoding/json"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/client"
)

// diskFault is an errorfs.Injector: while set, it fails the operations of
// the records' filesystem that its predicate selects.
type diskFault struct {
	mu   sync.Mutex
	err  syscall.Errno
	when func(errorfs.Op) bool // nil: no fault
}

func (d *diskFault) set(err syscall.Errno, when func(errorfs.Op) bool) {
	d.mu.Lock()
	d.err, d.when = err, when
	d.mu.Unlock()
}

func (d *diskFault) MaybeError(op errorfs.Op) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.when == nil || !d.when(op) {
		return nil
	}
	return &os.PathError{Op: "fault", Path: op.Path, Err: d.err}
}

func (d *diskFault) String() string { return "disk fault" }

// TestRecordsDegradedUnderStorageFaults: a node whose records disk fills
// up, turns read-only or fails (WAL writes, flushes, reads) keeps
// answering every read and fill, says so in /metrics, /admin/ring, /readyz
// and the admin page, refreshes a key filled while degraded through a
// rule-based invalidation, answers a delayed invalidation 503 instead of a
// 202 that would not be durable, and writes the records it kept in memory
// once the fault clears.
func TestRecordsDegradedUnderStorageFaults(t *testing.T) {
	writes := func(op errorfs.Op) bool { return op.Kind.ReadOrWrite() == errorfs.OpIsWrite }
	cases := []struct {
		name string
		err  syscall.Errno
		when func(errorfs.Op) bool
	}{
		{"full", syscall.ENOSPC, writes},
		{"read-only", syscall.EROFS, writes},
		{"failing", syscall.EIO, func(errorfs.Op) bool { return true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fault := &diskFault{}
			db := newFooDB()
			m := startClusterWith(t, 1, "", db, func(cfg *node.Config) {
				cfg.Data, cfg.DataFS = "records", errorfs.Wrap(vfs.NewMem(), fault)
				cfg.DataReopenBackoff = 20 * time.Millisecond
			})[0]
			get := func(attr string) answer {
				t.Helper()
				a := call(t, "GET", m.url+"/v1/cache/filtered?attr1="+attr, "", "")
				if a.code != 200 {
					t.Fatalf("GET filtered?attr1=%s = %d %s, want 200", attr, a.code, a.body)
				}
				return a
			}
			get("red")
			fault.set(c.err, c.when)
			get("blue") // its record cannot be written: the store degrades
			waitUntil(t, "the records degraded in /metrics", func() bool {
				return strings.Contains(string(call(t, "GET", m.url+"/metrics", "", "").body), "cachenode_records_degraded 1")
			})
			var ring client.RingInfo
			if err := json.Unmarshal(call(t, "GET", m.url+"/admin/ring", "", "").body, &ring); err != nil || ring.Records.State != "degraded" || ring.Records.Cause == "" {
				t.Errorf("/admin/ring records = %+v (%v), want degraded with a cause", ring.Records, err)
			}
			if a := call(t, "GET", m.url+"/readyz", "", ""); a.code != 200 || !strings.Contains(string(a.body), `"records":"degraded"`) {
				t.Errorf("/readyz = %d %s, want 200 with records degraded", a.code, a.body)
			}
			if a := call(t, "GET", m.url+"/admin/", "", ""); a.code != 200 || !strings.Contains(string(a.body), "records degraded") ||
				!strings.Contains(string(a.body), "Records degraded since") {
				t.Errorf("the admin page (%d) does not show the degraded records:\n%.2000s", a.code, a.body)
			}
			// Reads and fills go on: the values are in memory.
			get("red")
			get("blue")
			before := get("green").body
			if !strings.Contains(string(call(t, "GET", m.url+"/metrics", "", "").body), "cachenode_records_unwritten_total ") {
				t.Error("/metrics has no cachenode_records_unwritten_total")
			}
			if ring := ringOf(t, m); ring.Records.Unwritten == 0 {
				t.Errorf("unwritten = 0 after fills while degraded, want them counted")
			}
			// A change of a green Foo reaches the key filled while degraded.
			db.mu.Lock()
			db.foos["4"], db.rev = "green", db.rev+1
			db.mu.Unlock()
			a := call(t, "POST", m.url+"/v1/invalidate", "", `{"model":"Foo","changes":[{"op":"update","old":{"attr1":"green"},"new":{"attr1":"green"}}]}`)
			if a.code != 200 {
				t.Fatalf("rule-based invalidation while degraded = %d %s, want 200", a.code, a.body)
			}
			if after := get("green").body; string(after) == string(before) {
				t.Errorf("filtered?attr1=green still %s after the invalidation, want it refreshed", after)
			}
			wantError(t, call(t, "POST", m.url+"/v1/invalidate", "", `{"label":"filtered","delay":true}`), 503, "records_unavailable")

			fault.set(0, nil)
			waitUntil(t, "the records back in /metrics", func() bool {
				return strings.Contains(string(call(t, "GET", m.url+"/metrics", "", "").body), "cachenode_records_degraded 0")
			})
			// The records of the keys filled while degraded were kept in
			// memory and written at the reopen.
			waitUntil(t, "the records of blue and green", func() bool {
				body := string(call(t, "GET", m.url+"/admin/records?label=filtered", "", "").body)
				return strings.Contains(body, `"attr1":"blue"`) && strings.Contains(body, `"attr1":"green"`)
			})
			if a := call(t, "POST", m.url+"/v1/invalidate", "", `{"label":"filtered","delay":true}`); a.code != 202 {
				t.Errorf("delayed invalidation after the reopen = %d %s, want 202", a.code, a.body)
			}
		})
	}
}

func ringOf(t *testing.T, m *member) client.RingInfo {
	t.Helper()
	var ring client.RingInfo
	if err := json.Unmarshal(call(t, "GET", m.url+"/admin/ring", "", "").body, &ring); err != nil {
		t.Fatal(err)
	}
	return ring
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
