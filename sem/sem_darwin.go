package sem

import "golang.org/x/sys/unix"

// semctl calls the semctl system call. The kernel takes union semun by value (as a 64-bit
// user word), so arg carries the integer value for SETVAL and is ignored by the other commands
// used here.
func semctl(id, num, cmd int, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), arg, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func semctlSetval(id, num, v int) error {
	_, err := semctl(id, num, setval, uintptr(v))
	return err
}
