package resp

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// invalidations collects the keys a client was told to forget.
type invalidations struct {
	mu   sync.Mutex
	keys map[string]int
}

func (iv *invalidations) add(msgs []rueidis.RedisMessage) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.keys == nil {
		iv.keys = map[string]int{}
	}
	if msgs == nil {
		iv.keys["*"]++
	}
	for _, m := range msgs {
		k, _ := m.ToString()
		iv.keys[k]++
	}
}

func (iv *invalidations) count(key string) int {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	return iv.keys[key] + iv.keys["*"]
}

func newRueidis(t *testing.T, addr, token string, opt func(*rueidis.ClientOption)) rueidis.Client {
	t.Helper()
	o := rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, Password: token,
		DisableRetry: true, ConnWriteTimeout: 10 * time.Second}
	if opt != nil {
		opt(&o)
	}
	c, err := rueidis.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRueidisClientCache: a value in rueidis's client-side cache (RESP3
// tracking, DoCache with a TTL of an hour) on node A is gone from it after
// an invalidation sent to node B: the next DoCache reads the new value.
// Keys owned by A and by B, invalidated by key (DEL) and by a model change
// (CN.INVALIDATE); and a key past its freshness is invalidated too.
func TestRueidisClientCache(t *testing.T) {
	o := newOrigin()
	ms := startCluster(t, 2, "s3cret", o)
	a, b := ms[0], ms[1]
	iv := &invalidations{}
	ca := newRueidis(t, a.addr, "", func(o *rueidis.ClientOption) { o.OnInvalidations = iv.add })
	cb := newRueidis(t, b.addr, "s3cret", nil)
	ctx := context.Background()
	read := func(key string) (string, bool) {
		t.Helper()
		r := ca.DoCache(ctx, ca.B().Get().Key(key).Cache(), time.Hour)
		v, err := r.ToString()
		if err != nil {
			t.Fatalf("DoCache GET %s: %v", key, err)
		}
		return v, r.IsCacheHit()
	}
	ownedByA, idA := keyOwnedBy(t, a, "n1")
	ownedByB, idB := keyOwnedBy(t, a, "n2")
	for _, c := range []struct {
		name, key, id string
		invalidate    func(key, id string)
	}{
		{"owned by A, DEL on B", ownedByA, idA, func(key, id string) {
			if n, err := cb.Do(ctx, cb.B().Del().Key(key).Build()).AsInt64(); err != nil || n != 1 {
				t.Fatalf("DEL on B: %d %v", n, err)
			}
		}},
		{"owned by B, CN.INVALIDATE on B", ownedByB, idB, func(key, id string) {
			body := `{"model":"Item","changes":[{"op":"update","old":{"id":"` + id + `"},"new":{"id":"` + id + `"}}]}`
			if err := cb.Do(ctx, cb.B().Arbitrary("CN.INVALIDATE").Args(body).Build()).Error(); err != nil {
				t.Fatalf("CN.INVALIDATE on B: %v", err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := o.value(c.id)
			if v, _ := read(c.key); v != before {
				t.Fatalf("first read %q, want %q", v, before)
			}
			if v, hit := read(c.key); v != before || !hit {
				t.Fatalf("second read %q (client cache hit %v), want %q from the client cache", v, hit, before)
			}
			seen, pushed := iv.count(c.key), a.srv.stats.trackingPushes.Load()
			o.bump(c.id)
			c.invalidate(c.key, c.id)
			if a.srv.stats.trackingPushes.Load() == pushed {
				t.Errorf("the invalidation on B returned before A wrote the push to its tracking client")
			}
			// The push went out before the invalidation returned; the
			// client reads it in its own goroutine.
			waitFor(t, "the invalidation of "+c.key+" on A's client", func() bool { return iv.count(c.key) > seen })
			if v, hit := read(c.key); v != o.value(c.id) || hit {
				t.Errorf("read after the invalidation: %q (client cache hit %v), want %q", v, hit, o.value(c.id))
			}
		})
	}
	t.Run("past its freshness", func(t *testing.T) {
		key := "short?id=" + idB
		v, _ := read(key)
		o.bump(idB)
		waitFor(t, "the expiry of "+key+" pushed to A's client", func() bool { return iv.count(key) > 0 })
		if v2, hit := read(key); v2 == v || hit {
			t.Errorf("read after the expiry: %q (hit %v), the old value was %q", v2, hit, v)
		}
	})
	if got := a.srv.track.len(); got > 1000 {
		t.Errorf("tracking table of %d keys, over its bound", got)
	}
}

// TestTrackingTableBound: over TrackingTableMaxKeys, the oldest keys are
// invalidated and forgotten.
func TestTrackingTableBound(t *testing.T) {
	o := newOrigin()
	a := startCluster(t, 1, "", o)[0]
	iv := &invalidations{}
	ca := newRueidis(t, a.addr, "", func(o *rueidis.ClientOption) { o.OnInvalidations = iv.add })
	ctx := context.Background()
	for i := range 1010 { // the test cluster's bound is 1000
		key := "items?id=" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		if err := ca.DoCache(ctx, ca.B().Get().Key(key).Cache(), time.Hour).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.srv.track.len(); n != 1000 {
		t.Errorf("%d keys tracked, want the bound, 1000", n)
	}
	waitFor(t, "the oldest key invalidated", func() bool { return iv.count("items?id=a") > 0 })
}

// TestRESP2Redirect: RESP2 tracking redirected to a connection subscribed
// to __redis__:invalidate (redis-cli, RESP2), the reads on another
// connection (rueidis in RESP2): an invalidation sent to node B reaches
// the subscriber on node A.
func TestRESP2Redirect(t *testing.T) {
	bin := needTool(t, "redis-cli", "redis-tools")
	o := newOrigin()
	ms := startCluster(t, 2, "s3cret", o)
	a, b := ms[0], ms[1]
	host, port, _ := strings.Cut(a.addr, ":")
	sub := exec.Command(bin, "-2", "-h", host, "-p", port, "SUBSCRIBE", invalidateChannel)
	out, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Process.Kill(); sub.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("redis-cli ended before %s", what)
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("redis-cli printed nothing for %s", what)
		}
		return ""
	}
	for range 3 { // subscribe, the channel, 1
		next("the subscription")
	}
	ctx := context.Background()
	r2 := newRueidis(t, a.addr, "", func(o *rueidis.ClientOption) { o.AlwaysRESP2, o.DisableCache = true, true })
	if err := r2.Do(ctx, r2.B().ClientList().Build()).Error(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("CLIENT LIST without AUTH: %v, want NOAUTH", err)
	}
	admin := newRueidis(t, a.addr, "s3cret", func(o *rueidis.ClientOption) { o.AlwaysRESP2, o.DisableCache = true, true })
	// The subscriber's ID, from CLIENT LIST.
	list, err := admin.Do(ctx, admin.B().ClientList().Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	subID := ""
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, " cmd=subscribe ") {
			f := strings.Fields(l)
			subID = strings.TrimPrefix(f[0], "id=")
		}
	}
	if subID == "" {
		t.Fatalf("no subscriber in CLIENT LIST:\n%s", list)
	}
	key, id := keyOwnedBy(t, a, "n2")
	err = r2.Dedicated(func(c rueidis.DedicatedClient) error {
		if err := c.Do(ctx, c.B().ClientTracking().On().Redirect(mustInt(t, subID)).Build()).Error(); err != nil {
			return err
		}
		v, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
		if err != nil || v != o.value(id) {
			t.Errorf("GET %s: %q %v", key, v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cb := newRueidis(t, b.addr, "s3cret", func(o *rueidis.ClientOption) { o.AlwaysRESP2, o.DisableCache = true, true })
	o.bump(id)
	if n, err := cb.Do(ctx, cb.B().Del().Key(key).Build()).AsInt64(); err != nil || n != 1 {
		t.Fatalf("DEL on B: %d %v", n, err)
	}
	want := []string{"message", invalidateChannel, key}
	for _, w := range want {
		if l := next("the invalidation message"); l != w {
			t.Fatalf("redis-cli printed %q, want %q (of %q)", l, w, want)
		}
	}
	if v, err := r2.Do(ctx, r2.B().Get().Key(key).Build()).ToString(); err != nil || v != o.value(id) {
		t.Errorf("GET after the invalidation: %q %v, want %q", v, err, o.value(id))
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
