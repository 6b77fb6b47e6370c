//go:build !linux

package ring

import "runtime"

func osYield() { runtime.Gosched() }
