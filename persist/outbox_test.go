package persist

import (
	"errors"
	"testing"
	"time"
)

func TestOutboxSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	dues := []time.Duration{3, 1, 2, 1}
	var ids []uint64
	for i, d := range dues {
		id, err := s.Enqueue(t0.Add(d*time.Second), []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			t.Fatalf("IDs do not increase: %d after %d", id, ids[len(ids)-1])
		}
		ids = append(ids, id)
	}
	due, err := s.DueItems(t0.Add(time.Second), 0)
	if err != nil || len(due) != 2 || due[0].ID != ids[1] || due[1].ID != ids[3] {
		t.Fatalf("DueItems = %+v, %v", due, err)
	}
	if !due[0].Due.Equal(t0.Add(time.Second)) || string(due[0].Payload) != "\x01" {
		t.Errorf("item = %+v", due[0])
	}
	if err := s.Ack(ids[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Ack = %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(Config{Dir: dir, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, it := range pending {
		got = append(got, it.ID)
	}
	if want := []uint64{ids[3], ids[2], ids[0]}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("Pending after reopen = %v, want %v", got, want)
	}
	if due, _ := s.DueItems(t0.Add(time.Hour), 1); len(due) != 1 || due[0].ID != ids[3] {
		t.Errorf("DueItems(limit 1) = %+v", due)
	}
	for _, id := range got {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Every item was acknowledged: IDs still do not repeat.
	s = openMem(t, Config{Dir: dir})
	id, err := s.Enqueue(t0, nil)
	if err != nil || id <= ids[len(ids)-1] {
		t.Errorf("Enqueue after reopen = %d, %v, want an ID above %d", id, err, ids[len(ids)-1])
	}
	if p, _ := s.Pending(); len(p) != 1 {
		t.Errorf("Pending = %+v", p)
	}
}

func TestOpenRefusesOtherFormat(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	err = s.read(func(db *pebbleDB) error { return db.Set(metaKey(metaFormat), []byte{99}, nil) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(Config{Dir: dir}); err == nil {
		s.Close()
		t.Fatal("Open accepted a database of format 99")
	}
}
