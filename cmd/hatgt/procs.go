package main

import (
	"os"
	"runtime"
)

// defaultProcs is how many CPUs the Go scheduler uses for serve unless
// GOMAXPROCS says otherwise: half the machine, at least one.
//
// The data path is system-call bound (socket reads and writes, pread and
// pwrite): the kernel's TCP and block layers do much of the work on other
// CPUs. With every CPU given to Go, each command wakes idle threads across
// CPUs (futex hand-offs) that cost more than they bring. Measured on a
// 2-CPU machine with the initiator on the same machine (qemu-img bench,
// 4 KiB): one P gave 1.2x the QD1 and 1.5x the QD32 IOPS of two.
func defaultProcs(ncpu int) int {
	return max(1, ncpu/2)
}

// setProcs applies defaultProcs unless the GOMAXPROCS environment
// variable is set, and returns the value in force.
func setProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := defaultProcs(runtime.NumCPU())
	runtime.GOMAXPROCS(n)
	return n
}
