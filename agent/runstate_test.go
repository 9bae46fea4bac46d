package agent

import "testing"

func TestRunStateSuspectsAnUncleanStopAcrossAReboot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		steps   func(dir string) bool
		suspect bool
	}{
		{"first start", func(dir string) bool { s, _ := startRun(dir, "b1"); return s }, false},
		{"clean stop, reboot", func(dir string) bool {
			startRun(dir, "b1")
			endRun(dir, "b1")
			s, _ := startRun(dir, "b2")
			return s
		}, false},
		{"killed, same boot", func(dir string) bool {
			startRun(dir, "b1")
			s, _ := startRun(dir, "b1")
			return s
		}, false},
		{"killed, rebooted (power loss)", func(dir string) bool {
			startRun(dir, "b1")
			s, _ := startRun(dir, "b2")
			return s
		}, true},
		{"boot ID unknown", func(dir string) bool {
			startRun(dir, "")
			s, _ := startRun(dir, "")
			return s
		}, true},
		{"suspect once only: the next start after it is judged on its own", func(dir string) bool {
			startRun(dir, "b1")
			startRun(dir, "b2") // suspect
			endRun(dir, "b2")
			s, _ := startRun(dir, "b3")
			return s
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.steps(t.TempDir()); got != tc.suspect {
				t.Errorf("suspect = %v, want %v", got, tc.suspect)
			}
		})
	}
}
