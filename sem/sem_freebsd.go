package sem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// semun is union semun: an int val overlapping two pointers.
type semun struct {
	val int32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// semctl calls __semctl, which takes a pointer to union semun. The kernel only reads it for
// IPC_STAT, IPC_SET, GETALL, SETVAL and SETALL; the other commands used here pass 0.
func semctl(id, num, cmd int, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS___SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), arg, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func semctlSetval(id, num, v int) error {
	u := semun{val: int32(v)}
	_, err := semctl(id, num, setval, uintptr(unsafe.Pointer(&u)))
	return err
}
