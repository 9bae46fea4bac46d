package target

import "testing"

func TestTMFName(t *testing.T) {
	if got := tmfName(tmfLUNReset); got != "LOGICAL UNIT RESET" {
		t.Errorf("tmfName(LUN RESET) = %q", got)
	}
	if got := tmfName(99); got != "function 99" {
		t.Errorf("tmfName(99) = %q", got)
	}
}
