// Package invalidation turns invalidation requests and change events of the
// application's data into the set of cached variants they affect, applies
// them on one node, and decides the order in which the cluster carries
// them out.
//
// Requests: explicit keys, whole labels, attribute matches, and automatic
// rules per model (is_empty, or instance / outdated / newcomers getters), as
// the original library did, including bulk changes ([Resolve]).
//
// Application: each member calls [ApplyScope], which acts on the keys that
// member owns (found through its created-cache records, [Host]) and on its
// near-cache copies.
//
// Order: a [Broadcast] decides the two rounds of one event sent to every
// member (the owners first, then the near-cache copies), and a [Tracker]
// holds a node's invalidation state: which deliveries apply what, which
// events are offered on push/pull, what the background applier merges,
// whom to redeliver to, and when to forget. Neither does I/O or reads a
// clock, so the scenarios of testdata/ script their decisions step by step;
// the node package is the shell that feeds them and carries them out.
package invalidation
