// Package node is a cachenode cluster member: it wires the worker cache,
// the ring, gossip membership, the peer transport and the created-cache
// records into one node that embeds in any Go program, and is what the
// cachenode command runs.
//
// # Lifecycle
//
// New validates the configuration and builds the parts without touching
// the network. Start binds the gossip and peer ports, starts serving, and
// joins the cluster in the background (retrying with backoff); Ready and
// WaitReady tell when the node has joined and its ring is ready. Close hands
// the node's hot entries to their next owners, leaves the cluster
// gracefully, stops serving, flushes records and closes the store. Close is
// safe to call twice. Many nodes can live in one process: a node touches no
// process-wide state.
//
// # The Get path
//
// A Get first looks for a fresh local entry. On a miss, if this node owns
// the key, the worker's single flight runs the getter here; otherwise the
// owner is asked over the peer transport (it fills once for the whole
// cluster) and the answer is kept as a near-cache copy. A request forwarded
// by a peer is answered with GetOwned and never forwarded again, so nodes
// whose rings disagree for a moment cannot bounce it. When the owner cannot
// be reached within the worker's wait budget, the value is computed locally
// and answered as a fallback, not kept.
package node
