//go:build (linux && (amd64 || arm64)) || darwin || freebsd

package sem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Operations that are the same on every system with System V semaphores;
// post, setValue and semctl are each system's own.

// Wake raises semaphore num so that up to n sleepers can pass, without piling the count up:
// it reads the value (GETVAL) and adds only max(0, min(n, 32767) - value).
func (s *Set) Wake(num, n int) error {
	v, err := s.Value(num)
	if err != nil {
		return err
	}
	if delta := wakeDelta(v, n); delta > 0 {
		return post(s.id, num, delta)
	}
	return nil
}

// Value returns the current value of semaphore num (GETVAL).
func (s *Set) Value(num int) (int, error) {
	if err := s.checkNum(num); err != nil {
		return 0, err
	}
	v, err := semctl(s.id, num, getval, 0)
	if err != nil {
		return 0, wrap("semctl GETVAL", err)
	}
	return v, nil
}

// SetValue sets semaphore num to v (SETVAL), e.g. to store a cookie in a spare semaphore.
// v must be in [0, 32767].
func (s *Set) SetValue(num, v int) error {
	if err := s.checkNum(num); err != nil {
		return err
	}
	if v < 0 || v > semvmx {
		return fmt.Errorf("semctl SETVAL: value %d out of range [0,%d]", v, semvmx)
	}
	if err := setValue(s.id, num, v); err != nil {
		return wrap("semctl SETVAL", err)
	}
	return nil
}

// Waiting returns how many processes (threads) sleep waiting to decrement semaphore num
// (GETNCNT). On systems where Wait polls, pollers are not counted.
func (s *Set) Waiting(num int) (int, error) {
	if err := s.checkNum(num); err != nil {
		return 0, err
	}
	v, err := semctl(s.id, num, getncnt, 0)
	if err != nil {
		return 0, wrap("semctl GETNCNT", err)
	}
	return v, nil
}

// wrap adds context and maps "set is gone" errnos to ErrRemoved (errors.Is works for both).
func wrap(op string, err error) error {
	if errors.Is(err, unix.EIDRM) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%s: %w: %w", op, ErrRemoved, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Remove deletes the set (IPC_RMID). Sleepers in other processes get ErrRemoved.
func (s *Set) Remove() error {
	if _, err := semctl(s.id, 0, ipcRmid, 0); err != nil {
		return wrap("semctl IPC_RMID", err)
	}
	return nil
}
