package node

import (
	"context"
	"net"

	"github.com/hashicorp/memberlist"
)

// netHook wraps the sockets of a node. Tests implement it to cut a node off
// from the others (a partition) without real network namespaces.
type netHook interface {
	// listener wraps the peer-transport listener.
	listener(net.Listener) net.Listener
	// dial opens the peer transport's outgoing connections.
	dial(ctx context.Context, network, addr string) (net.Conn, error)
	// transport sets mc.Transport (and the ports memberlist must use).
	transport(mc *memberlist.Config) error
}
