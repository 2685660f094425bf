// Package invalidation turns invalidation requests and change events of the
// application's data into the set of cached variants they affect, and
// applies them on one node: explicit keys, whole labels, attribute matches,
// and automatic rules per model (is_empty, or instance / outdated /
// newcomers getters), as the original library did, including bulk changes.
//
// The node broadcasts an event to every member; each member calls Apply,
// which acts on the keys that member owns (found through its created-cache
// records) and on its near-cache copies.
package invalidation
