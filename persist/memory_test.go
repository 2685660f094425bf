package persist

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// An in-memory database over its part of the memory budget drops the
// records that expire first, down to within the budget.
func TestMemoryBudgetDropsEarliestRecords(t *testing.T) {
	const budget = 1 << 20
	s := openMem(t, Config{MemoryBudget: budget})
	if s.cfg.QueueSize != 2*DefaultBatchSize {
		t.Errorf("QueueSize within a 1 MiB budget: %d, want two batches", s.cfg.QueueSize)
	}
	const n = 16000
	for i := range n {
		r := Record{Label: "w", Key: fmt.Sprintf("w@id=%08d", i), Args: map[string]any{"id": i}, Owner: "n1",
			CreatedAt: t0, AvailableTo: t0.Add(time.Hour + time.Duration(i)*time.Millisecond), Size: 100}
		for {
			err := s.PutAsync(r)
			if !errors.Is(err, ErrQueueFull) {
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	before := s.MemoryBytes()["records"]
	if before <= budget/2 {
		t.Fatalf("%d records hold %d B: not over half the %d B budget, nothing to test", n, before, budget)
	}
	s.enforceMemory()
	// Pebble's compactions reclaim the removed records' space in the
	// background.
	after := before
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if after = s.MemoryBytes()["records"]; after <= budget/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the in-memory database holds %d B 20 s after enforcing, over half the %d B budget", after, budget)
		}
	}
	t.Logf("records: %d B before, %d B after", before, after)
	if _, err := s.Get("w@id=00000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the record that expires first was kept: %v", err)
	}
	if _, err := s.Get(fmt.Sprintf("w@id=%08d", n-1)); err != nil {
		t.Errorf("the record that expires last was dropped: %v", err)
	}
}
