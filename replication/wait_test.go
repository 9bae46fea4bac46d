package replication

import "time"

func waitABit() { time.Sleep(2 * time.Millisecond) }
