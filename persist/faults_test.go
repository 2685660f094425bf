package persist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// injector fails the filesystem operations that when selects with err,
// until cleared. It is an errorfs.Injector.
type injector struct {
	mu   sync.Mutex
	err  error
	when func(errorfs.Op) bool
	hits int
}

func (i *injector) set(errno syscall.Errno, when func(errorfs.Op) bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.err, i.when = errno, when
}

func (i *injector) clear() { i.set(0, nil) }

func (i *injector) MaybeError(op errorfs.Op) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.when == nil || !i.when(op) {
		return nil
	}
	i.hits++
	return &os.PathError{Op: op.Kind.ReadOrWrite().String(), Path: op.Path, Err: i.err}
}

func (i *injector) String() string { return "test injector" }

// The operations the tests fail.
var (
	walWrites = func(op errorfs.Op) bool {
		return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log")
	}
	allWrites  = func(op errorfs.Op) bool { return op.Kind.ReadOrWrite() == errorfs.OpIsWrite }
	tableWrite = func(op errorfs.Op) bool {
		return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".sst")
	}
	tableReads = func(op errorfs.Op) bool {
		return op.Kind == errorfs.OpFileReadAt && strings.HasSuffix(op.Path, ".sst")
	}
)

// openFaulty opens a store in dir on fs (an errorfs over a MemFS) with a
// fast reopen backoff.
func openFaulty(t *testing.T, fs vfs.FS, cfg Config) *Store {
	t.Helper()
	cfg.Dir, cfg.FS = "db", fs
	cfg.ReopenBackoff, cfg.ReopenBackoffMax = 10*time.Millisecond, 50*time.Millisecond
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitHealth(t *testing.T, s *Store, degraded bool) Health {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := s.Health()
		if h.Degraded == degraded {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("store degraded = %v after 10s, want %v (health %+v)", h.Degraded, degraded, h)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func faultRec(i int) Record {
	return Record{Label: "foos", Key: fmt.Sprintf("foos:%d", i), Args: map[string]any{"id": fmt.Sprint(i)},
		Match: map[string][]string{"id": {fmt.Sprint(i)}}, CreatedAt: time.Unix(1000, 0)}
}

// TestFaultWriteDegradesAndReopens: a WAL write, a flush or a compaction
// that fails with ENOSPC, EIO or EROFS degrades the store instead of
// panicking (Pebble's Fatalf); operations then fail with ErrUnavailable at
// once, PutAsync records wait in memory, and when the fault clears the
// store reopens and writes them.
func TestFaultWriteDegradesAndReopens(t *testing.T) {
	cases := []struct {
		name  string
		errno syscall.Errno
		when  func(errorfs.Op) bool
		// trigger makes the store write where the fault is.
		trigger func(t *testing.T, s *Store)
	}{
		{"wal-enospc", syscall.ENOSPC, walWrites, putOne},
		{"wal-eio", syscall.EIO, walWrites, putOne},
		{"readonly", syscall.EROFS, allWrites, putOne},
		{"flush-enospc", syscall.ENOSPC, tableWrite, flushDB},
		{"compaction-eio", syscall.EIO, tableWrite, compactDB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inj := &injector{}
			s := openFaulty(t, errorfs.Wrap(vfs.NewMem(), inj), Config{})
			if err := s.Put(faultRec(0)); err != nil {
				t.Fatal(err)
			}
			if c.name == "compaction-eio" {
				// Two overlapping tables, so that compacting rewrites them,
				// and an empty memtable, so that it flushes nothing first.
				flushWait(t, s)
				if err := s.Put(faultRec(0)); err != nil {
					t.Fatal(err)
				}
				flushWait(t, s)
			}
			inj.set(c.errno, c.when)
			c.trigger(t, s)
			h := waitHealth(t, s, true)
			if !strings.Contains(h.Cause, c.errno.Error()) && !strings.Contains(h.Cause, "fatal") {
				t.Errorf("Health().Cause = %q, want the fault", h.Cause)
			}
			if err := s.Put(faultRec(2)); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Put while degraded = %v, want ErrUnavailable", err)
			}
			if _, err := s.Get(faultRec(0).Key); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Get while degraded = %v, want ErrUnavailable", err)
			}
			if err := s.PutAsync(faultRec(3)); err != nil {
				t.Errorf("PutAsync while degraded = %v, want it queued", err)
			}
			if err := s.Flush(); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Flush while degraded = %v, want ErrUnavailable", err)
			}
			inj.clear()
			h = waitHealth(t, s, false)
			if h.Faults != 1 || h.Reopens != 1 {
				t.Errorf("Health = %+v, want 1 fault and 1 reopen", h)
			}
			if err := s.Flush(); err != nil {
				t.Fatalf("Flush after reopen: %v", err)
			}
			for _, i := range []int{0, 3} {
				if _, err := s.Get(faultRec(i).Key); err != nil {
					t.Errorf("Get(%s) after reopen: %v", faultRec(i).Key, err)
				}
			}
			if err := s.Put(faultRec(4)); err != nil {
				t.Errorf("Put after reopen: %v", err)
			}
		})
	}
}

func putOne(t *testing.T, s *Store) {
	if err := s.Put(faultRec(1)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put on a failing disk = %v, want ErrUnavailable", err)
	}
}

func flushDB(t *testing.T, s *Store) {
	// AsyncFlush: a failing flush is retried until the database closes, and
	// Flush would wait for it.
	if err := s.read(func(db *pebble.DB) error { _, err := db.AsyncFlush(); return err }); err != nil {
		t.Fatal(err)
	}
}

func flushWait(t *testing.T, s *Store) {
	if err := s.read(func(db *pebble.DB) error { return db.Flush() }); err != nil {
		t.Fatal(err)
	}
}

func compactDB(t *testing.T, s *Store) {
	// A manual compaction retries a failed one until its context ends; the
	// failure reaches the store through BackgroundError meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s.read(func(db *pebble.DB) error { return db.Compact(ctx, []byte{0}, []byte{0xff}, false) })
}

// TestFaultReadDegrades: a read that fails with EIO degrades the store
// like a failed write, and the store comes back when the disk does.
func TestFaultReadDegrades(t *testing.T) {
	inj := &injector{}
	fs := errorfs.Wrap(vfs.NewMem(), inj)
	s := openFaulty(t, fs, Config{})
	for i := range 3000 {
		if err := s.Put(faultRec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFaulty(t, fs, Config{})
	inj.set(syscall.EIO, tableReads)
	if _, err := s.Match("foos", map[string][]string{"id": {"2999"}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Match on a failing disk = %v, want ErrUnavailable", err)
	}
	waitHealth(t, s, true)
	inj.clear()
	waitHealth(t, s, false)
	recs, err := s.Match("foos", map[string][]string{"id": {"2999"}})
	if err != nil || len(recs) != 1 {
		t.Fatalf("Match after reopen = %d records, %v; want 1", len(recs), err)
	}
}

// TestFaultAtOpenStartsDegraded: a database that cannot be opened because
// the disk is read-only, or fails reads, gives a degraded store, not an
// error, and it opens once the disk is back.
func TestFaultAtOpenStartsDegraded(t *testing.T) {
	inj := &injector{}
	fs := errorfs.Wrap(vfs.NewMem(), inj)
	s := openFaulty(t, fs, Config{})
	if err := s.Put(faultRec(1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	inj.set(syscall.EROFS, allWrites)
	s = openFaulty(t, fs, Config{})
	waitHealth(t, s, true)
	if err := s.PutAsync(faultRec(2)); err != nil {
		t.Fatal(err)
	}
	inj.clear()
	waitHealth(t, s, false)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if _, err := s.Get(faultRec(i).Key); err != nil {
			t.Errorf("Get(%d): %v", i, err)
		}
	}
}

// TestFaultQueueBound: while degraded, PutAsync keeps at most QueueSize
// records and counts the others as dropped.
func TestFaultQueueBound(t *testing.T) {
	inj := &injector{}
	s := openFaulty(t, errorfs.Wrap(vfs.NewMem(), inj), Config{QueueSize: 4})
	inj.set(syscall.ENOSPC, walWrites)
	putOne(t, s)
	waitHealth(t, s, true)
	dropped := 0
	for i := range 10 {
		if err := s.PutAsync(faultRec(10 + i)); errors.Is(err, ErrQueueFull) {
			dropped++
		}
	}
	if dropped != 6 || s.Stats().Dropped != 6 {
		t.Errorf("dropped %d (Stats %d), want 6 of 10 beyond a queue of 4", dropped, s.Stats().Dropped)
	}
	inj.clear()
	waitHealth(t, s, false)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(faultRec(13).Key); err != nil {
		t.Errorf("queued record not written after reopen: %v", err)
	}
}

// corruptManifest overwrites 64 bytes of the MANIFEST of the database in
// dir on fs, as a torn write or a bad sector would.
func corruptManifest(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	for _, n := range slices.Backward(names) { // the newest is the one in use
		if !strings.HasPrefix(n, "MANIFEST-") {
			continue
		}
		f, err := fs.OpenReadWrite(fs.PathJoin(dir, n), vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 64), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no MANIFEST in %s: %v", dir, names)
}

// TestCorruptAtOpenMovedAside: a database with a corrupt MANIFEST is moved
// aside to Dir.corrupt-<time> and the store starts empty; at most
// KeepCorrupt such directories are kept; with OnCorruption "fail", Open
// fails as it did before the option.
func TestCorruptAtOpenMovedAside(t *testing.T) {
	fs := vfs.NewMem()
	open := func(cfg Config) (*Store, error) {
		cfg.Dir, cfg.FS, cfg.SweepInterval = "data/db", fs, -1
		return Open(cfg)
	}
	corrupted := func() {
		s, err := open(Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(faultRec(1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		corruptManifest(t, fs, "data/db")
	}
	corrupted()
	if _, err := open(Config{OnCorruption: CorruptionFail}); err == nil || !isCorruption(err) {
		t.Fatalf("Open with OnCorruption fail = %v, want the corruption error", err)
	}
	for round := 1; round <= 2; round++ {
		if round == 2 {
			corrupted()
		}
		s, err := open(Config{})
		if err != nil {
			t.Fatalf("round %d: Open of a corrupt database: %v", round, err)
		}
		h := s.Health()
		if h.Degraded || len(h.MovedAside) != 1 || !strings.HasPrefix(h.MovedAside[0], "data/db.corrupt-") {
			t.Errorf("round %d: Health = %+v, want one directory moved aside and not degraded", round, h)
		}
		if _, err := s.Get(faultRec(1).Key); !errors.Is(err, ErrNotFound) {
			t.Errorf("round %d: Get from the new database = %v, want ErrNotFound (it starts empty)", round, err)
		}
		if err := s.Put(faultRec(2)); err != nil {
			t.Errorf("round %d: Put: %v", round, err)
		}
		s.Close()
		names, _ := fs.List("data")
		aside := 0
		for _, n := range names {
			if strings.HasPrefix(n, "db.corrupt-") {
				aside++
			}
		}
		if aside != 1 {
			t.Errorf("round %d: %d moved-aside directories in %v, want 1 (KeepCorrupt default)", round, aside, names)
		}
	}
}
