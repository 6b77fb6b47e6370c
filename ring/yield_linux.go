//go:build linux

package ring

import "golang.org/x/sys/unix"

// osYield gives the CPU to another runnable thread of any process
// (sched_yield), where runtime.Gosched only runs another goroutine of this
// one: a spinning waiter whose peer was woken on the same CPU must let it
// run, or both wait for the scheduler's tick.
func osYield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
