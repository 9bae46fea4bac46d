package replication_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/replication"
)

// Two nodes in one process: "a" owns LUN 7 in epoch 1, "b" mirrors it. The
// cluster would provide the coordinator (over Raft) and the TCP transport.
func Example() {
	ctx := context.Background()
	net := replication.NewInmemNetwork()
	coord := replication.NewMemCoordinator()
	coord.SetView(7, replication.View{Epoch: 1, Owner: "a", Replicas: []replication.NodeID{"a", "b"}, InSync: []replication.NodeID{"a", "b"}})

	mirrorStore := blockstore.NewMemory(1 << 20)
	mirror := replication.NewMirror(nil)
	mirror.AddLUN(7, mirrorStore, 1)
	net.Register("b", mirror.Handle)

	vol, err := replication.NewVolume(replication.DefaultConfig(), 7, "a", blockstore.NewMemory(1<<20), coord, net.Transport("a"))
	if err != nil {
		panic(err)
	}
	if err := vol.Open(ctx); err != nil {
		panic(err)
	}
	defer vol.Close()

	data := bytes.Repeat([]byte{0x5a}, 4096)
	if _, err := vol.WriteAt(data, 8192); err != nil {
		panic(err)
	}
	got := make([]byte, 4096)
	mirrorStore.ReadAt(got, 8192)
	fmt.Println("on the mirror:", bytes.Equal(got, data))
	fmt.Println("in sync:", vol.InSync())
	// Output:
	// on the mirror: true
	// in sync: [a b]
}
