package nodetest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/nodetest"
	"github.com/cachenode/cachenode/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/hashicorp/go-metrics.(*InmemSink).run"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/go-metrics.NewInmemSink"),
	)
}

// TestCluster: Start returns nodes that agree on one ring of all of them,
// with the hooks applied in order; Add grows it; Close ends every node.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	var configured, setUp []int
	c, err := nodetest.Start(ctx, nodetest.Config{Size: 3, NamePrefix: "t",
		Configure: func(i int, cfg *node.Config) { configured = append(configured, i); cfg.Memory = 8 << 20 },
		Setup: func(i int, n *node.Node) error {
			setUp = append(setUp, i)
			_, err := n.Cache().Register(worker.Config{Label: "w", Getter: worker.GetterFunc(func(context.Context, worker.Args) (worker.Value, error) {
				return worker.Value{Data: []byte(n.Name())}, nil
			})})
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nodes := c.Nodes()
	if len(nodes) != 3 || nodes[0].Name() != "t1" || nodes[2].Name() != "t3" || len(configured) != 3 || len(setUp) != 3 {
		t.Fatalf("nodes %v, configured %v, set up %v", nodes, configured, setUp)
	}
	if !nodetest.Converged(nodes, nil) {
		t.Fatal("Start returned before the ring converged")
	}
	// Every node reads through the same owner.
	var owner string
	for _, n := range nodes {
		e, _, err := n.Get(ctx, "w", worker.Args{"k": 1}, worker.Settings{})
		if err != nil {
			t.Fatal(err)
		}
		if owner == "" {
			owner = string(e.Value)
		} else if string(e.Value) != owner {
			t.Errorf("%s read %q, another node %q", n.Name(), e.Value, owner)
		}
	}
	if _, err := c.Add(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes(); len(got) != 4 || got[3].Name() != "t4" || got[3].Ring().Len() != 4 {
		t.Fatalf("after Add: %d nodes", len(got))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestStartFailsCleanly: a Setup error stops Start, which closes the
// nodes it started (goleak checks their goroutines ended).
func TestStartFailsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := nodetest.Start(ctx, nodetest.Config{Size: 2, Setup: func(i int, n *node.Node) error {
		if i == 1 {
			return context.Canceled
		}
		return nil
	}})
	if err == nil {
		t.Fatal("Start succeeded despite a failing Setup")
	}
}
