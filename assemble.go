package shmbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/ring"
)

// Large messages.
//
// A message larger than one record's payload is sent as fragments: a
// FragBegin record whose payload starts with the message's total length
// (8 bytes, little-endian) followed by its first bytes, then records with
// no fragment flag, then a FragEnd record. One producer sends one message
// at a time per lane, so on a lane the fragments of different producers
// may interleave but each producer's are in order; the consumer tells them
// apart by the producer slot in the record header. A message takes its
// place in the receive order where its FragEnd record is.
//
// Fragments must be released as they arrive (a message may be larger than
// the lane), so the consumer copies them into a reassembly file beside the
// segment, one per (lane, producer slot): NAME~asm.LANE.SLOT.ID, on the same
// tmpfs, ID being random. The file records the ring position of the last fragment it
// absorbed, so a consumer that takes over from a dead one loads the files,
// skips fragments they already hold, and loses nothing. A message is
// delivered from its file; then the file is marked delivered, the FragEnd
// record released, and the file marked idle (a crash in between is
// detected by the mark). Idle files stay mapped for the producer's next
// large message: creating, prefaulting and removing a file per message
// cost 40 times the copying. Files of producers that are gone are removed.
//
// The segment's directory is usually /dev/shm, where every user may create
// files. So the name of a reassembly file is never trusted, only the file:
// the consumer creates its files O_EXCL under a fresh random name (a name
// somebody else took is simply not used), gives them the segment's owner,
// group and mode, and adopts a file left by an earlier consumer only if
// fstat of the opened descriptor shows a regular file with one link, owned
// by the segment's owner or by this process's user, granting nobody access
// that the segment does not. Anything else in the directory is left alone.

const asmHeader = 64

var asmMagic = [8]byte{'S', 'H', 'M', 'B', 'A', 'S', 'M', '1'}

// Reassembly file header offsets.
const (
	asmOffLane    = 8  // u32
	asmOffSlot    = 12 // u32
	asmOffTag     = 16 // u64: the producer's owner tag
	asmOffTotal   = 24 // u64: message length
	asmOffFilled  = 32 // u64: bytes absorbed
	asmOffLastPos = 40 // u64: ring position of the last absorbed fragment
	asmOffState   = 48 // u32: 0 assembling, 1 delivered, 2 idle
)

const (
	asmAssembling = 0
	asmDelivered  = 1
	asmIdle       = 2
)

// asm is one message being reassembled.
type asm struct {
	m          *segment.Mapping
	b          []byte
	lane, slot int
	total      uint64
	held       bool // delivered by Take and not yet released: collect leaves it
}

func (x *asm) u64(off int) uint64       { return binary.LittleEndian.Uint64(x.b[off:]) }
func (x *asm) put64(off int, v uint64)  { binary.LittleEndian.PutUint64(x.b[off:], v) }
func (x *asm) tag() uint64              { return x.u64(asmOffTag) }
func (x *asm) filled() uint64           { return x.u64(asmOffFilled) }
func (x *asm) lastPos() uint64          { return x.u64(asmOffLastPos) }
func (x *asm) state() uint32            { return binary.LittleEndian.Uint32(x.b[asmOffState:]) }
func (x *asm) delivered() bool          { return x.state() == asmDelivered }
func (x *asm) setState(v uint32)        { binary.LittleEndian.PutUint32(x.b[asmOffState:], v) }
func (x *asm) room() uint64             { return uint64(len(x.b)) - asmHeader }
func (x *asm) data() []byte             { return x.b[asmHeader : asmHeader+x.total] }
func (x *asm) holds(pos uint64) bool    { return int64(pos-x.lastPos()) <= 0 }
func (x *asm) markDelivered(pos uint64) { x.put64(asmOffLastPos, pos); x.setState(asmDelivered) }

// absorb appends a fragment found at ring position pos.
func (x *asm) absorb(p []byte, pos uint64) error {
	f := x.filled()
	if f > x.total || uint64(len(p)) > x.total-f {
		return fmt.Errorf("%w: fragment of %d bytes overflows a %d-byte message at %d", ErrCorrupt, len(p), x.total, f)
	}
	copy(x.b[asmHeader+f:], p)
	// The data is in the file before the counters say so.
	x.put64(asmOffFilled, f+uint64(len(p)))
	x.put64(asmOffLastPos, pos)
	return nil
}

// assembler holds a consumer's messages in reassembly.
type assembler struct {
	b     *Bus
	base  string // segment path
	anon  bool   // the segment is a memfd: reassembly happens in memfds too
	trust asmTrust
	parts map[[2]int]*asm // messages being reassembled
	spare map[[2]int]*asm // idle files, mapped, for the next message
}

func newAssembler(b *Bus) *assembler {
	t := asmTrust{uid: ^uint32(0), gid: ^uint32(0), euid: uint32(os.Geteuid()), perm: DefaultMode}
	if fi, err := b.m.File().Stat(); err == nil {
		t.perm = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			t.uid, t.gid = st.Uid, st.Gid
		}
	}
	return &assembler{b: b, base: b.m.Path(), anon: b.m.Anonymous(), trust: t,
		parts: map[[2]int]*asm{}, spare: map[[2]int]*asm{}}
}

// asmTrust says which reassembly files a consumer may use: files that only
// the bus's own users can have made, and that grant nobody access the
// segment does not.
type asmTrust struct {
	uid, gid uint32      // the segment file's owner and group
	euid     uint32      // this process's effective user
	perm     os.FileMode // the segment file's permission bits
}

// errForeign marks a file whose owner the bus does not trust: it is neither
// used nor removed.
var errForeign = errors.New("not made by a user of the bus")

// check looks at the fstat of an opened reassembly file. A file of another
// user gives errForeign; one of ours that must not be used (a hard link, a
// wider mode, another group that may read it) gives ErrCorrupt.
func (t asmTrust) check(fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: no owner known", errForeign)
	}
	if st.Uid != t.uid && st.Uid != t.euid {
		return fmt.Errorf("%w: owned by uid %d, the segment by uid %d", errForeign, st.Uid, t.uid)
	}
	perm := fi.Mode().Perm()
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode())
	case st.Nlink != 1:
		return fmt.Errorf("%w: %d links", ErrCorrupt, st.Nlink)
	case fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 || perm&^t.perm != 0:
		return fmt.Errorf("%w: mode %v grants more than the segment's %v", ErrCorrupt, fi.Mode(), t.perm)
	case perm&0o070 != 0 && st.Gid != t.gid:
		return fmt.Errorf("%w: group %d has access, the segment's group is %d", ErrCorrupt, st.Gid, t.gid)
	}
	return nil
}

// own gives a new reassembly file the segment's owner and group, so that
// whichever user of the bus consumes next can adopt it. Only root can give
// a file away; anyone else keeps it, and, if the group cannot be the
// segment's, keeps the group out.
func (t asmTrust) own(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == t.uid && st.Gid == t.gid {
		return nil
	}
	if f.Chown(int(t.uid), int(t.gid)) == nil || st.Gid == t.gid || f.Chown(-1, int(t.gid)) == nil {
		return nil
	}
	if t.perm&0o070 != 0 {
		return f.Chmod(t.perm &^ 0o070)
	}
	return nil
}

// asmTries is how many fresh names create tries before giving up: another
// user can take a name only by guessing 64 random bits.
const asmTries = 8

// create makes a reassembly file of size bytes for (lane, slot) under a
// fresh name, created O_EXCL|O_NOFOLLOW with the segment's mode.
func (a *assembler) create(lane, slot int, size int64) (*segment.Mapping, error) {
	if a.anon {
		return segment.CreateMemfd(fmt.Sprintf("%s~asm.%d.%d", a.b.name, lane, slot), size, false)
	}
	for try := 1; ; try++ {
		path := fmt.Sprintf("%s~asm.%d.%d.%016x", a.base, lane, slot, rand.Uint64())
		m, err := segment.Create(path, size, a.trust.perm)
		if errors.Is(err, os.ErrExist) && try < asmTries {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := a.trust.own(m.File()); err != nil {
			m.Close()
			os.Remove(path)
			return nil, fmt.Errorf("reassembly file %q: %w", path, err)
		}
		return m, nil
	}
}

// asmFiles lists the reassembly files of the bus whose segment is at base.
func asmFiles(base string) []string {
	m, _ := filepath.Glob(base + "~asm.*")
	return m
}

// load takes over the reassembly files a previous consumer left. Files of
// the bus's users that are damaged, or whose message was delivered, are
// removed; files of anybody else are left alone.
func (a *assembler) load() {
	if a.anon {
		return // no directory to keep them in: nothing survives a consumer
	}
	for _, path := range asmFiles(a.base) {
		x, err := a.open(path)
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				os.Remove(path)
			}
			continue
		}
		k := [2]int{x.lane, x.slot}
		if old := a.parts[k]; old != nil || a.spare[k] != nil {
			// Two files for one producer: keep the one with a message.
			if old != nil || x.state() == asmIdle {
				a.remove(x)
				continue
			}
			a.remove(a.spare[k])
		}
		if x.state() == asmIdle {
			a.spare[k] = x
		} else {
			// Assembling, or delivered with its last record perhaps not
			// yet released (next skips that record and idles the file).
			a.parts[k] = x
		}
	}
}

// open maps the reassembly file at path if the bus may use it: a file of
// another user gives errForeign, a damaged one of ours ErrCorrupt.
func (a *assembler) open(path string) (*asm, error) {
	m, err := segment.OpenFile(path, asmHeader, a.trust.check)
	if err != nil {
		return nil, err
	}
	lane, slot, ok := parseAsmName(strings.TrimPrefix(path, a.base+"~asm."))
	if !ok || lane >= len(a.b.lanes) || slot >= a.b.g.PeerSlots {
		m.Close()
		return nil, fmt.Errorf("%w: reassembly file name %q", ErrCorrupt, path)
	}
	x := &asm{m: m, b: m.Bytes(), lane: lane, slot: slot}
	x.total = x.u64(asmOffTotal)
	if [8]byte(x.b[:8]) != asmMagic || x.total > uint64(a.b.hdr.MaxMessage) || x.total > x.room() ||
		x.filled() > x.total || x.state() > asmIdle || binary.LittleEndian.Uint32(x.b[asmOffLane:]) != uint32(lane) ||
		binary.LittleEndian.Uint32(x.b[asmOffSlot:]) != uint32(slot) {
		m.Close()
		return nil, fmt.Errorf("%w: reassembly file %q", ErrCorrupt, path)
	}
	return x, nil
}

// begin starts reassembling a message of total bytes from slot on lane,
// replacing any unfinished one of the same producer (it gave up on it). It
// reuses the producer's idle file when it is large enough.
func (a *assembler) begin(lane, slot int, tag, total uint64) (*asm, error) {
	a.discard(lane, slot)
	k := [2]int{lane, slot}
	x := a.spare[k]
	if x != nil && x.room() < total {
		a.remove(x)
		x = nil
	}
	if x == nil {
		// Room for this message, rounded up so that similar ones fit too.
		size := int64(asmHeader + alignUp(total, 64<<10))
		m, err := a.create(lane, slot, size)
		if err != nil {
			return nil, fmt.Errorf("reassembly file: %w", err)
		}
		x = &asm{m: m, b: m.Bytes(), lane: lane, slot: slot}
		copy(x.b, asmMagic[:])
		binary.LittleEndian.PutUint32(x.b[asmOffLane:], uint32(lane))
		binary.LittleEndian.PutUint32(x.b[asmOffSlot:], uint32(slot))
	}
	delete(a.spare, k)
	x.total = total
	x.put64(asmOffTag, tag)
	x.put64(asmOffTotal, total)
	x.put64(asmOffFilled, 0)
	x.put64(asmOffLastPos, 0)
	x.setState(asmAssembling)
	a.parts[k] = x
	return x, nil
}

// parseAsmName reads LANE.SLOT.ID (ID: 16 hex digits; older consumers
// wrote LANE.SLOT alone, which is accepted too) after "~asm.".
func parseAsmName(s string) (lane, slot int, ok bool) {
	ls, rest, ok1 := strings.Cut(s, ".")
	ss, id, withID := strings.Cut(rest, ".")
	lane, err1 := strconv.Atoi(ls)
	slot, err2 := strconv.Atoi(ss)
	if !ok1 || err1 != nil || err2 != nil || lane < 0 || slot < 0 {
		return 0, 0, false
	}
	if withID {
		if _, err := strconv.ParseUint(id, 16, 64); err != nil || len(id) != 16 {
			return 0, 0, false
		}
	}
	return lane, slot, true
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// discard ends the message being reassembled for (lane, slot), if any: its
// file becomes idle, kept for the producer's next large message.
func (a *assembler) discard(lane, slot int) {
	k := [2]int{lane, slot}
	if x := a.parts[k]; x != nil {
		delete(a.parts, k)
		x.setState(asmIdle)
		a.spare[k] = x
	}
}

// remove unmaps and deletes x's file.
func (a *assembler) remove(x *asm) {
	k := [2]int{x.lane, x.slot}
	if a.parts[k] == x {
		delete(a.parts, k)
	}
	if a.spare[k] == x {
		delete(a.spare, k)
	}
	x.m.Close()
	if !x.m.Anonymous() {
		os.Remove(x.m.Path())
	}
}

// collect removes the files of lane whose producer is gone (its slot is
// free, dead, or owned by another process now), unfinished messages
// included. A producer's last fragments may still be in the ring when it
// dies or leaves — anywhere past the read cursor, behind another
// producer's claim — so collect runs only while drained says nothing at all
// lies past the cursor, and asks again after seeing the producer gone:
// its death (or its release of the slot) came after its last publish, so
// a fragment it published is visible to that second look, which then
// leaves the file for the fragments to finish.
func (a *assembler) collect(lane int, drained func() bool) {
	for _, m := range []map[[2]int]*asm{a.parts, a.spare} {
		for k, x := range m {
			if k[0] != lane || x.held {
				continue
			}
			if owner := a.b.peers.owner(x.slot).Load(); owner != x.tag() || a.b.peers.State(x.slot) == ring.PeerDead {
				if !drained() {
					return
				}
				a.remove(x)
			}
		}
	}
}

// close unmaps the files. Unfinished messages stay for the next consumer;
// idle files are removed.
func (a *assembler) close() error {
	var errs []error
	for _, x := range a.spare {
		a.remove(x)
	}
	for k, x := range a.parts {
		errs = append(errs, x.m.Close())
		delete(a.parts, k)
	}
	return errors.Join(errs...)
}

// removeAsmFiles deletes the reassembly files of the bus at base.
func removeAsmFiles(base string) {
	for _, p := range asmFiles(base) {
		os.Remove(p)
	}
}
