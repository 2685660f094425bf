package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The disk-full fault (issue 20): every node of the scenario keeps its data
// directory on a tmpfs of its own; the fault fills one node's tmpfs to
// 100%, holds, and frees it. The node must stay up and serve every read
// (no failure window opens: availability outside windows must stay 100%),
// its records degrade while the disk is full and come back once it is
// freed, and the records it acknowledged meanwhile (X-Cache: miss as the
// owner: kept in memory while degraded) are in /admin/records then.

const faultDiskFull = "disk-full"

// diskSize is each node's tmpfs: room for the records of a run, so that
// only the harness fills it.
const diskSize = "16m"

// canMountDisks says whether the harness can mount a tmpfs per node.
func canMountDisks() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "a tmpfs per node needs root"
	}
	return true, ""
}

// mountDisk mounts a tmpfs of c.disk as n's data disk.
func (c *cluster) mountDisk(n *node) error {
	n.disk = filepath.Join(n.dir, "disk")
	if err := os.MkdirAll(n.disk, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+c.disk, "tmpfs", n.disk).CombinedOutput(); err != nil {
		return fmt.Errorf("mount a tmpfs for %s: %v: %s", n.Name, err, out)
	}
	n.data = filepath.Join(n.disk, "data")
	return nil
}

// unmountDisks unmounts the nodes' tmpfs; the nodes are gone by then.
func (c *cluster) unmountDisks() {
	for _, n := range c.nodes() {
		if n.disk != "" {
			if out, err := exec.Command("umount", "-l", n.disk).CombinedOutput(); err != nil {
				c.logf("  umount %s: %v: %s", n.disk, err, out)
			}
		}
	}
}

// fillDisk writes a file on n's disk until it is full.
func fillDisk(n *node) (string, error) {
	path := filepath.Join(n.disk, "filler")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, chunk := range []int{len(buf), 4096, 1} {
		for {
			if _, err := f.Write(buf[:chunk]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return path, err
				}
				break
			}
		}
	}
	return path, nil
}

// recordsState reads the state of n's records from /admin/ring.
func (n *node) recordsState(ctx context.Context, c *cluster) (string, error) {
	var ring struct {
		Records struct {
			State string `json:"state"`
		} `json:"records"`
	}
	if err := getJSON(ctx, c.hc, n.URL()+"/admin/ring", &ring); err != nil {
		return "", err
	}
	return ring.Records.State, nil
}

// waitRecords polls n's records state until it is want or limit passes.
func (s *scenarioRun) waitRecords(ctx context.Context, n *node, want string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if st, err := n.recordsState(ctx, s.c); err == nil && st == want {
			return true
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return false
}

// diskFull runs one disk-full fault to its recovery.
func (s *scenarioRun) diskFull(ctx context.Context) error {
	x := s.pickRunning(1)[0]
	hold := s.between(2*time.Second, 4*time.Second)
	ev := s.newEvent("disk full", false, x)
	ev.Converged = true // the membership does not change
	filler, err := fillDisk(x)
	if err != nil {
		return err
	}
	// The workload fills keys all the time, and each fill writes a record:
	// the records degrade at the next WAL write past the preallocated room.
	if !s.waitRecords(ctx, x, "degraded", hold+5*time.Second) {
		ev.Note = "the records did not degrade on the full disk"
		s.logf("  %6.1fs            %s", time.Since(s.start).Seconds(), ev.Note)
	}
	s.sleepUntil(ctx, ev.At.Add(hold))
	ev2 := s.newEvent("disk freed", false, x)
	ev2.Converged = true
	if err := os.Remove(filler); err != nil {
		return err
	}
	rc := recordCheck{Node: x.Name, Fault: faultDiskFull}
	// The reopen backoff doubles from 1 s while the disk is full, up to
	// 30 s between attempts.
	if !s.waitRecords(ctx, x, "ok", 40*time.Second) {
		rc.QueryErr = "the records were not back 40 s after the disk was freed"
		s.records = append(s.records, rc)
		return nil
	}
	// Not a convergence time: it would open a failure window, and the
	// node must serve every read throughout.
	ev2.Note = fmt.Sprintf("records back in %.2fs", time.Since(ev2.At).Seconds())
	s.logf("  %6.1fs            %s", time.Since(s.start).Seconds(), ev2.Note)
	// Every record the node acknowledged, before and during the fault, is
	// there once the queue kept in memory is written (a moment after the
	// reopen: retry for a few seconds).
	acked := s.acks.before(x.Name, ev2.At)
	rc.Acked = len(acked)
	deadline := time.Now().Add(5 * time.Second)
	for {
		have, err := x.records(ctx, s.c.hc)
		rc.Missing, rc.QueryErr = nil, ""
		if err != nil {
			rc.QueryErr = err.Error()
		}
		for _, k := range acked {
			if err == nil && !have[k] {
				rc.Missing = append(rc.Missing, k)
			}
		}
		if (err == nil && len(rc.Missing) == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	s.records = append(s.records, rc)
	return nil
}
