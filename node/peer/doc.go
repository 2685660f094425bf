// Package peer is the transport between cachenode nodes: multiplexed
// request/response frames over persistent TCP connections.
//
// A [Client] keeps a small pool of connections to each peer address and
// multiplexes any number of concurrent [Client.Call]s over them; a [Server]
// answers the requests of each connection concurrently through a [Handler].
// Payloads are opaque bytes to this package (the node puts msgpack in them);
// only error responses have a fixed encoding, a msgpack map
// {"code": string, "message": string} that the client turns into a
// [*RemoteError].
//
// # Connection set-up
//
// A connection is optionally wrapped in TLS ([ServerConfig.TLS],
// [ClientConfig.TLS]) and then starts with a hello from each side, the
// client's first:
//
//	offset size field
//	0      4    magic "CNP" and protocol version 1
//	4      1    auth mode: 0 none, 1 HMAC-SHA256 with the shared key
//	5      3    reserved, zero
//	8      4    the sender's maximum frame payload (big-endian uint32)
//	12     32   a random nonce
//
// Without a key the hellos are the whole handshake. With a key
// ([ServerConfig.Key], [ClientConfig.Key]) both sides prove that they know
// it before any frame flows:
//
//	client -> server  helloC
//	server -> client  helloS, proofS = HMAC-SHA256(key, label 'S' helloC helloS)
//	client -> server  proofC = HMAC-SHA256(key, label 'C' helloC helloS)
//	server -> client  one status byte: 0 accepted, 1 rejected
//
// label is "cachenode peer v1". The proofs cover both nonces, so neither can
// be replayed on another connection, and a role byte, so a proof cannot be
// reflected back to its sender. Proofs are compared in constant time. A side
// whose mode differs from its peer's, or whose proof does not verify, closes
// the connection; the client reports [ErrAuth]. The whole set-up runs under a
// deadline (HandshakeTimeout, DialTimeout). The key authenticates the
// endpoints of a connection; it neither encrypts nor signs the frames that
// follow: use TLS for that.
//
// A side may hold a keyring: its primary key (Key) and further keys (Keys)
// that it accepts. Each side proves its primary and accepts a proof by any
// key of its ring, so a key is rotated without a cut: add the new key to
// every ring, then make it the primary everywhere, then remove the old one.
//
// # Limits
//
// A Server closes at once a connection beyond MaxConns in all or
// MaxConnsPerIP from one remote address, and a connection on which no frame
// arrived for IdleTimeout after its handshake while no request of it runs.
// A Client closes its connections that no call used for its own, shorter,
// IdleTimeout. Warnings about refused or rejected connections are logged at
// most once a minute per remote address, with the count held back.
//
// # Frames
//
// After the handshake both directions carry frames: a fixed 20-byte header
// and a payload.
//
//	offset size field
//	0      4    payload length (big-endian uint32), at most the receiver's
//	            maximum frame size
//	4      1    kind: 1 request, 2 response, 3 error response, 4 cancel
//	5      1    op: the request's operation, echoed in its response
//	6      2    reserved, zero
//	8      8    request id (big-endian uint64, never 0), chosen by the
//	            client, unique among the requests in flight on a connection
//	16     4    request budget in milliseconds (0: no deadline); zero for
//	            the other kinds
//
// A request's budget is the time left until the caller's deadline, rounded
// up; the server gives its handler a context that expires after it. A cancel
// frame (empty payload) tells the server that the caller of a request gave
// up; the handler's context is cancelled and no response is sent. The client
// sends one when the caller's context is cancelled, not when its deadline
// passes: the server's copy of the deadline expires then too. Responses
// may come back in any order. A frame that breaks these rules (unknown kind,
// non-zero reserved bytes, a length above the limit, a truncated frame) closes
// the connection; the length is checked before any memory is allocated for
// the payload.
package peer
