package sem

// ipc64Perm is struct ipc64_perm (include/uapi/asm-generic/ipcbuf.h), 48 bytes on 64-bit.
type ipc64Perm struct {
	key  int32
	uid  uint32
	gid  uint32
	cuid uint32
	cgid uint32
	mode uint32
	seq  uint16
	_    uint16
	_    uint64
	_    uint64
}

// semid64DS is struct semid64_ds for x86_64 (arch/x86/include/uapi/asm/sembuf.h): unlike the
// asm-generic layout it keeps an unused word after each time, so sem_nsems is at offset 80.
type semid64DS struct {
	perm  ipc64Perm
	otime int64
	_     uint64
	ctime int64
	_     uint64
	nsems uint64
	_     uint64
	_     uint64
}
