package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// removeRetry is how often "hatgt node remove" asks again while the
// leader waits out the owner lease of the node to remove.
const removeRetry = 500 * time.Millisecond

// removeNode removes node id. While the node may still serve the LUNs it
// owns (its owner lease has not surely run out, cluster.ErrOwnerLease), it
// says so once and asks again until the command's --timeout ends.
func (c *clusterCLI) removeNode(ctx context.Context, cl *cluster.Client, id string) error {
	var waiting error // the last ErrOwnerLease answer
	for {
		err := cl.RemoveNode(ctx, id)
		if waiting != nil && ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after --timeout %v)", waiting, c.timeout)
		}
		if !errors.Is(err, cluster.ErrOwnerLease) {
			return err
		}
		if waiting == nil {
			fmt.Fprintf(c.out, "waiting: %v\n", err)
		}
		waiting = err
		select {
		case <-ctx.Done():
		case <-time.After(removeRetry):
		}
	}
}
