// Command hatgt is the one binary of a hatgt node: serve, join, status and
// management of targets, LUNs, ACLs and CHAP.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hatgt serve --dev")
		os.Exit(2)
	}
	if ok, err := clusterCommand(os.Args[1], os.Args[2:]); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "hatgt:", err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "hatgt: unknown command", os.Args[1])
	os.Exit(2)
}
