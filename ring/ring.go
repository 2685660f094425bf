// Package ring maps cache keys to owning members with consistent hashing.
//
// A Ring is built from a set of member names and a Config. Keys are hashed
// (xxhash64) into PartitionCount partitions, and each partition is owned by
// one member, chosen by github.com/buraksezer/consistent: consistent hashing
// with virtual nodes and bounded loads, so no member owns more than
// ceil(floor(PartitionCount/members) × Load) partitions.
//
// A Ring is immutable: membership changes build a new Ring (With, Without,
// New), and Moved tells which partitions changed hands. It holds no locks,
// starts no goroutines and is safe for concurrent use.
//
// Membership changes: the bounded-load placement re-places every partition
// against a capacity that depends on the member count, so a change also
// moves some partitions between members that stayed, unlike plain
// consistent hashing. Measured with the defaults over 1 to 40 members,
// adding one moves on average 1.5 times its fair share P/N (up to about 4
// times), and about 20% of the moved partitions go to old members; removing
// one moves all of its partitions plus, now and then, several times as many
// others. A larger Load trades balance for stability: at 2, adding a member
// moves 1.07 times P/N on average and 1% goes to old members. Use Moved to
// learn exactly which partitions changed hands.
//
// Determinism: the partition table depends only on the member set (not its
// order), the Config, and the hashing scheme of this package and of the
// consistent library version it is built with. Every node that has the same
// set and Config computes the same table, and the same Version. Virtual
// nodes are named member+"#"+i rather than the library's bare member+i
// (under which "node1" and "node11" share ten virtual nodes), so the table
// differs from what consistent.New would compute over the bare names.
package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Errors returned by this package; each is wrapped with details, test with
// errors.Is.
var (
	// ErrInvalidConfig is returned by New when a Config field is out of
	// range; the message names the field.
	ErrInvalidConfig = errors.New("ring: invalid config")
	// ErrEmptyMember is returned for an empty member name.
	ErrEmptyMember = errors.New("ring: empty member name")
	// ErrDuplicateMember is returned when a member name appears twice, or
	// when With adds a member already present.
	ErrDuplicateMember = errors.New("ring: duplicate member")
	// ErrUnknownMember is returned by Without for a name not in the ring.
	ErrUnknownMember = errors.New("ring: unknown member")
	// ErrTooManyMembers is returned when there are more members than
	// partitions: some member would own nothing and the bounded-load
	// placement could not complete.
	ErrTooManyMembers = errors.New("ring: more members than partitions")
	// ErrHashCollision is returned when two virtual nodes hash to the same
	// 64-bit value. The odds are about (members × ReplicationFactor)² / 2⁶⁵,
	// so in practice never; renaming a member resolves it.
	ErrHashCollision = errors.New("ring: virtual node hash collision")
	// ErrPartitionCountMismatch is returned by Moved when the two rings do
	// not have the same PartitionCount.
	ErrPartitionCountMismatch = errors.New("ring: partition counts differ")
)

// vnodeSep ends each member's key on the hash circle. The consistent library
// names virtual node i of a member fmt.Sprintf("%s%d", key, i). With bare
// names "node1" and "node11" share the virtual node names "node110" to
// "node119", so one silently loses half its virtual nodes (and which one
// depended on insertion order). Ending the key with a non-digit makes the
// names unambiguous: the last non-digit of "name#12" is always the separator.
const vnodeSep = "#"

// versionScheme is hashed into Version so that a change of the placement
// scheme changes every Version, even for the same members and Config.
const versionScheme = "cachenode/ring/v1"

// Ring is an immutable partition table over a set of members. The zero
// value is not usable; build one with New. Safe for concurrent use.
type Ring struct {
	cfg     Config   // filled and validated
	pc      uint64   // cfg.PartitionCount, for Partition
	members []string // sorted, distinct
	version uint64

	// ownerIdx[p] is the index in members of the owner of partition p;
	// nil when the ring has no members.
	ownerIdx []int32

	// The hash circle, for Owners: vnodes holds the virtual node hashes in
	// ascending order, vnodeMember the index in members of each one, and
	// partStart[p] the index in vnodes of the first virtual node at or after
	// the hash of partition p (where the placement of p started).
	vnodes      []uint64
	vnodeMember []int32
	partStart   []int32
}

// member is a ring member as the consistent library sees it.
type member struct {
	name string
	key  string // name + vnodeSep, precomputed: String is called in loops
}

func (m member) String() string { return m.key }

// hasher adapts xxhash to consistent.Hasher.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

var _ consistent.Hasher = hasher{}

// New builds the ring of the given members. The order of members does not
// matter: the same set gives the same ring on every node. cfg fields left at
// zero take their defaults; cfg itself is not modified, nor is members.
//
// An empty member list gives a ring with no owners: Owner returns "", false.
//
// Errors: ErrInvalidConfig (the message names the field), ErrEmptyMember,
// ErrDuplicateMember, ErrTooManyMembers (more members than partitions) and,
// with negligible odds, ErrHashCollision. New does not panic.
func New(cfg Config, members []string) (*Ring, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	names := slices.Clone(members)
	slices.Sort(names)
	for i, n := range names {
		if n == "" {
			return nil, ErrEmptyMember
		}
		if i > 0 && names[i-1] == n {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, n)
		}
	}
	return build(c, names)
}

// build makes the ring of names, which must be sorted and distinct, with c
// already validated.
func build(c Config, names []string) (*Ring, error) {
	if len(names) > c.PartitionCount {
		return nil, fmt.Errorf("%w: %d members, PartitionCount %d", ErrTooManyMembers, len(names), c.PartitionCount)
	}
	if names == nil {
		names = []string{}
	}
	r := &Ring{
		cfg:     c,
		pc:      uint64(c.PartitionCount),
		members: names,
		version: version(c, names),
	}
	if len(names) == 0 {
		// Not handed to the library: consistent.New with an empty non-nil
		// list panics ("not enough room to distribute partitions").
		return r, nil
	}
	if err := r.buildCircle(); err != nil {
		return nil, err
	}

	// Why the library cannot panic here: it panics when it finds no member
	// with room for a partition. Room: with Load > 1 and n <= P members,
	// ceil(floor(P/n)*Load) >= floor(P/n)+1, so total capacity exceeds P.
	// Finding it: the library's search visits every virtual node but the
	// one just before the starting point, and each member has at least 2
	// distinct virtual nodes (ReplicationFactor >= 2, collisions rejected).
	ms := make([]consistent.Member, len(names))
	for i, n := range names {
		// Sorted insertion: on a hash collision the library keeps the
		// member added last, so order would matter (collisions are
		// rejected above anyway).
		ms[i] = member{name: n, key: n + vnodeSep}
	}
	lib := consistent.New(ms, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    c.PartitionCount,
		ReplicationFactor: c.ReplicationFactor,
		Load:              c.Load,
	})
	r.ownerIdx = make([]int32, c.PartitionCount)
	for p := range r.ownerIdx {
		m, ok := lib.GetPartitionOwner(p).(member)
		if !ok {
			return nil, fmt.Errorf("ring: internal error: partition %d has no owner", p)
		}
		i, found := slices.BinarySearch(names, m.name)
		if !found {
			return nil, fmt.Errorf("ring: internal error: partition %d owned by unknown member %q", p, m.name)
		}
		r.ownerIdx[p] = int32(i)
	}
	return r, nil
}

// buildCircle computes the virtual nodes the same way the consistent
// library does (hash of key + decimal index) and where each partition's
// placement starts (first virtual node at or after the hash of the
// partition id as 8 little-endian bytes).
func (r *Ring) buildCircle() error {
	rf := r.cfg.ReplicationFactor
	type vnode struct {
		hash   uint64
		member int32
	}
	vs := make([]vnode, 0, len(r.members)*rf)
	var buf []byte
	for mi, n := range r.members {
		for i := range rf {
			buf = append(buf[:0], n...)
			buf = append(buf, vnodeSep...)
			buf = strconv.AppendInt(buf, int64(i), 10)
			vs = append(vs, vnode{hash: xxhash.Sum64(buf), member: int32(mi)})
		}
	}
	slices.SortFunc(vs, func(a, b vnode) int {
		if a.hash != b.hash {
			if a.hash < b.hash {
				return -1
			}
			return 1
		}
		return int(a.member - b.member)
	})
	r.vnodes = make([]uint64, len(vs))
	r.vnodeMember = make([]int32, len(vs))
	for i, v := range vs {
		if i > 0 && vs[i-1].hash == v.hash {
			return fmt.Errorf("%w: members %q and %q", ErrHashCollision, r.members[vs[i-1].member], r.members[v.member])
		}
		r.vnodes[i], r.vnodeMember[i] = v.hash, v.member
	}
	r.partStart = make([]int32, r.cfg.PartitionCount)
	var pb [8]byte
	for p := range r.partStart {
		binary.LittleEndian.PutUint64(pb[:], uint64(p))
		h := xxhash.Sum64(pb[:])
		i, _ := slices.BinarySearch(r.vnodes, h)
		if i == len(r.vnodes) {
			i = 0
		}
		r.partStart[p] = int32(i)
	}
	return nil
}

// version hashes the scheme, the Config and the sorted member names, each
// name length-prefixed so that no two sets encode alike.
func version(c Config, names []string) uint64 {
	d := xxhash.New()
	b := make([]byte, 0, 64)
	b = append(b, versionScheme...)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.PartitionCount))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.ReplicationFactor))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.Load))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(names)))
	_, _ = d.Write(b)
	for _, n := range names {
		b = binary.LittleEndian.AppendUint64(b[:0], uint64(len(n)))
		_, _ = d.Write(b)
		_, _ = d.WriteString(n)
	}
	return d.Sum64()
}

// Config returns the configuration of the ring, with defaults filled in.
func (r *Ring) Config() Config { return r.cfg }

// Version identifies the ring's inputs: a hash of the sorted member set and
// the Config. Rings built from the same set and Config have the same Version
// on every node; any change of membership or Config changes it (barring a
// 64-bit hash collision). Nodes can compare Versions to check that they
// agree on ownership, provided they run the same version of this package.
func (r *Ring) Version() uint64 { return r.version }

// Members returns the member names, sorted. The slice is a copy.
func (r *Ring) Members() []string { return slices.Clone(r.members) }

// Len returns the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Has reports whether name is a member.
func (r *Ring) Has(name string) bool {
	_, found := slices.BinarySearch(r.members, name)
	return found
}

// PartitionCount returns the number of partitions.
func (r *Ring) PartitionCount() int { return r.cfg.PartitionCount }

// Partition returns the partition id of key, in [0, PartitionCount): the
// xxhash64 of key modulo PartitionCount. It does not depend on the members.
func (r *Ring) Partition(key string) int {
	return int(xxhash.Sum64String(key) % r.pc)
}

// Owner returns the member that owns key, and false if the ring has no
// members. It does not allocate.
func (r *Ring) Owner(key string) (string, bool) {
	return r.PartitionOwner(r.Partition(key))
}

// PartitionOwner returns the member that owns partition partID, and false
// if the ring has no members or partID is out of range.
func (r *Ring) PartitionOwner(partID int) (string, bool) {
	if partID < 0 || partID >= len(r.ownerIdx) {
		return "", false
	}
	return r.members[r.ownerIdx[partID]], true
}

// Owners returns up to n distinct members for key: the owner first, then
// the next distinct members in clockwise order on the hash circle from the
// partition's hash. Its length is min(n, number of members); nil if n <= 0
// or the ring is empty. Owners(key, k) is a prefix of Owners(key, n) for
// k <= n, and the followers of a partition differ from partition to
// partition, so the keys of a member that fails spread over the others.
func (r *Ring) Owners(key string, n int) []string {
	return r.PartitionOwners(r.Partition(key), n)
}

// PartitionOwners is Owners for a partition id; nil if partID is out of
// range.
func (r *Ring) PartitionOwners(partID, n int) []string {
	if n <= 0 || partID < 0 || partID >= len(r.ownerIdx) {
		return nil
	}
	n = min(n, len(r.members))
	owner := r.ownerIdx[partID]
	out := make([]string, 1, n)
	out[0] = r.members[owner]
	if n == 1 {
		return out
	}
	seen := make([]bool, len(r.members))
	seen[owner] = true
	// Every member has ReplicationFactor virtual nodes, so one turn of the
	// circle finds all of them.
	j := int(r.partStart[partID])
	for range r.vnodes {
		if m := r.vnodeMember[j]; !seen[m] {
			seen[m] = true
			out = append(out, r.members[m])
			if len(out) == n {
				break
			}
		}
		if j++; j == len(r.vnodes) {
			j = 0
		}
	}
	return out
}

// Partitions returns the owner of every partition, indexed by partition id.
// The slice is a copy of length PartitionCount; its entries are "" when the
// ring has no members.
func (r *Ring) Partitions() []string {
	out := make([]string, r.cfg.PartitionCount)
	for p, i := range r.ownerIdx {
		out[p] = r.members[i]
	}
	return out
}

// PartitionsOf returns the ids of the partitions owned by member, ascending;
// nil if it owns none or is not a member.
func (r *Ring) PartitionsOf(member string) []int {
	i, found := slices.BinarySearch(r.members, member)
	if !found {
		return nil
	}
	var out []int
	for p, o := range r.ownerIdx {
		if int(o) == i {
			out = append(out, p)
		}
	}
	return out
}

// With returns a new ring with member added and the same Config; r is
// unchanged. Errors: ErrEmptyMember, ErrDuplicateMember if it is already a
// member, ErrTooManyMembers.
func (r *Ring) With(member string) (*Ring, error) {
	if member == "" {
		return nil, ErrEmptyMember
	}
	i, found := slices.BinarySearch(r.members, member)
	if found {
		return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, member)
	}
	return build(r.cfg, slices.Insert(slices.Clone(r.members), i, member))
}

// Without returns a new ring with member removed and the same Config; r is
// unchanged. Errors: ErrUnknownMember if it is not a member.
func (r *Ring) Without(member string) (*Ring, error) {
	i, found := slices.BinarySearch(r.members, member)
	if !found {
		return nil, fmt.Errorf("%w: %q", ErrUnknownMember, member)
	}
	return build(r.cfg, slices.Delete(slices.Clone(r.members), i, i+1))
}

// Moved returns the ids of the partitions whose owner differs between from
// and to, ascending: the partitions whose keys change hands when a node
// switches from one ring to the other. A partition with no owner in one
// ring (empty ring) and an owner in the other counts as moved. The rings
// may differ in members and Config but must have the same PartitionCount,
// else the error is ErrPartitionCountMismatch.
func Moved(from, to *Ring) ([]int, error) {
	if from.pc != to.pc {
		return nil, fmt.Errorf("%w: %d and %d", ErrPartitionCountMismatch, from.pc, to.pc)
	}
	var out []int
	for p := range int(from.pc) {
		a, _ := from.PartitionOwner(p)
		b, _ := to.PartitionOwner(p)
		if a != b {
			out = append(out, p)
		}
	}
	return out, nil
}
