package main

import (
	"runtime"
	"testing"
)

func TestDefaultProcs(t *testing.T) {
	for ncpu, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 16: 8} {
		if got := defaultProcs(ncpu); got != want {
			t.Errorf("defaultProcs(%d) = %d, want %d", ncpu, got, want)
		}
	}
}

func TestSetProcsHonoursEnvironment(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(old)
	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	if got := setProcs(); got != 3 {
		t.Fatalf("setProcs with GOMAXPROCS=3 set = %d", got)
	}
	t.Setenv("GOMAXPROCS", "")
	if got, want := setProcs(), defaultProcs(runtime.NumCPU()); got != want || runtime.GOMAXPROCS(0) != want {
		t.Fatalf("setProcs = %d (runtime %d), want %d", got, runtime.GOMAXPROCS(0), want)
	}
}
