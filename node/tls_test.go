package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// testTLS returns a mutual-TLS config with a self-signed certificate for
// 127.0.0.1 that is its own CA.
func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cachenode peer test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      pool, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}
}

func TestPeerTLS(t *testing.T) {
	tc := testTLS(t)
	g := newCounting(0)
	start := func(name string, tlsc *tls.Config, join []string) *Node {
		n, err := New(Config{Name: name, Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: steadyMembership(), PeerTLS: tlsc, Join: join})
		if err != nil {
			t.Fatal(err)
		}
		withWorker(g, worker.Settings{Tick: 100 * time.Millisecond, TickAmount: worker.Int(20)})(n)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n1 := start("n1", tc, nil)
	n2 := start("n2", tc, []string{n1.GossipAddr()})
	plain := start("plain", nil, []string{n1.GossipAddr()})
	waitFor(t, 5*time.Second, "three members", func() bool {
		return n1.Ring().Len() == 3 && n2.Ring().Len() == 3 && plain.Ring().Len() == 3
	})
	ctx := context.Background()
	fetched, refused := 0, 0
	for k := range 60 {
		key, _ := worker.KeyOf("w", worker.Args{"id": k})
		switch n1.Owner(key) {
		case "n2":
			// TLS to TLS: a real fetch from the owner.
			_, st, err := n1.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{})
			if err != nil || st == worker.Fallback {
				t.Fatalf("key %d from n1 through TLS: %v %v", k, st, err)
			}
			fetched++
		case "n1":
			// A node without the certificates cannot talk to a TLS peer.
			_, st, err := plain.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{})
			if err != nil || st != worker.Fallback {
				t.Fatalf("key %d from the plain node: %v %v, want a fallback", k, st, err)
			}
			refused++
		}
	}
	if fetched == 0 || refused == 0 {
		t.Fatalf("fetched %d, refused %d: the test covered nothing", fetched, refused)
	}
}
