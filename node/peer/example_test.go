package peer_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cachenode/cachenode/node/peer"
)

// The ops of this example's protocol.
const (
	opUpper byte = 1
	opFail  byte = 2
)

func Example() {
	// The server side: a handler answering ops.
	srv, err := peer.NewServer(peer.ServerConfig{}, peer.HandlerFunc(
		func(ctx context.Context, op byte, payload []byte) ([]byte, error) {
			switch op {
			case opUpper:
				return []byte(strings.ToUpper(string(payload))), nil
			case opFail:
				return nil, &peer.RemoteError{Code: "not_found", Message: "no such key"}
			}
			return nil, fmt.Errorf("unknown op %d", op)
		}))
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// The client side: one Client for every peer.
	client, err := peer.NewClient(peer.ClientConfig{})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := client.Call(ctx, ln.Addr().String(), opUpper, []byte("hello"))
	fmt.Println(string(resp), err)

	_, err = client.Call(ctx, ln.Addr().String(), opFail, nil)
	var re *peer.RemoteError
	fmt.Println(errors.As(err, &re), re.Code)

	_, err = client.Call(ctx, ln.Addr().String(), 99, nil)
	fmt.Println(err)

	_ = client.Close()
	_ = srv.Close()
	fmt.Println(<-served)
	// Output:
	// HELLO <nil>
	// true not_found
	// peer: remote error internal: unknown op 99
	// <nil>
}
