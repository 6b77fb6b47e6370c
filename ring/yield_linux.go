//go:build linux

package ring

import "syscall"

// osYield gives the CPU to another runnable thread of any process
// (sched_yield), where runtime.Gosched only runs another goroutine of this
// one: a spinning waiter whose peer was woken on the same CPU must let it
// run, or both wait for the scheduler's tick.
func osYield() { syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }
