package replication

import "time"

func waitABit() { time.Sleep(2 * time.Millisecond) }

var testStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const second = time.Second
