// Package worker is the cache worker of one node: named loaders with a
// canonical key per argument set, a hard TTL, a soft "relevance" TTL with
// background rebuild, one computation per key with a bounded wait, and
// invalidation that never lets a fill that started earlier be kept as fresh.
//
// The package does no networking. A [Cache] holds the workers of a node and
// the byte-bounded store their entries live in; the node package plugs the
// cluster in through the [PeerPicker] seam, exactly as groupcache does, and
// keeps created-cache records through [CacheConfig.OnFill].
//
// # Concepts
//
// A worker ([Config]) has a label, a getter that builds the value from the
// call's arguments ([Args]), and the settings of the original library
// ([Settings]): expires, tick, tick_amount, is_concurrent,
// relevance_invalidation, relevance_expires, delay_invalidation,
// delay_countdown, delay_logging and cached_entity. Each setting resolves in
// three layers: the per-call override wins over the worker's field, which
// wins over the process-wide default ([Policy]) that the node sets.
//
// Values are stored encoded (bytes) so that they can cross the wire; the
// generic [Typed] worker encodes and decodes a Go type T with msgpack and
// keeps the decoded value next to the bytes so that local hits do not decode.
//
// # Concurrency
//
// A [Cache] and its workers are safe for concurrent use. Time comes from an
// injectable [Clock]; a clockwork FakeClock makes TTL and tick tests instant.
package worker
