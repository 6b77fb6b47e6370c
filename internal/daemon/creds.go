//go:build linux

package daemon

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Permission bits asked for by requests.
const (
	permRead  = 4
	permWrite = 2
)

// creds are a client's credentials as the kernel reported them when it
// connected.
type creds struct {
	pid, uid, gid uint32
	groups        []uint32 // supplementary groups (SO_PEERGROUPS), if known
}

// peerCreds asks the kernel who is at the other end of c.
func peerCreds(c *net.UnixConn) (creds, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return creds{}, err
	}
	var cr creds
	var serr error
	err = raw.Control(func(fd uintptr) {
		var u *unix.Ucred
		u, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr != nil {
			return
		}
		cr = creds{pid: uint32(u.Pid), uid: u.Uid, gid: u.Gid}
		cr.groups = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return creds{}, fmt.Errorf("read peer credentials: %w", err)
	}
	return cr, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13); nil if the kernel has none.
func peerGroups(fd int) []uint32 {
	buf := make([]byte, 4*256)
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 || n > uint32(len(buf)) {
		return nil
	}
	out := make([]uint32, 0, n/4)
	for i := 0; i+4 <= int(n); i += 4 {
		out = append(out, binary.NativeEndian.Uint32(buf[i:]))
	}
	return out
}

// missing returns "" if the permission bits of st admit c for want (a mask
// of permRead and permWrite), else the bits missing ("read", "write",
// "read and write"). Root is admitted to everything.
func (c creds) missing(st *syscall.Stat_t, want uint32) string {
	if c.uid == 0 {
		return ""
	}
	mode := uint32(st.Mode) & 0o777
	var bits uint32
	switch {
	case c.uid == st.Uid:
		bits = mode >> 6 & 7
	case c.gid == st.Gid || slices.Contains(c.groups, st.Gid):
		bits = mode >> 3 & 7
	default:
		bits = mode & 7
	}
	switch lack := want &^ bits; lack {
	case 0:
		return ""
	case permRead:
		return "read"
	case permWrite:
		return "write"
	default:
		return "read and write"
	}
}
