// Package simnet is an in-memory network with faults, for running several
// cluster nodes in one test process: Raft (RaftLayer), gossip
// (GossipTransport), HTTP (Host.DialContext and Host.Listen) and any other
// net.Conn user, on one network whose links can be cut, hosts paused and
// processes crashed.
//
// The faults behave as TCP and UDP behave on a real network, because the
// code under test (hashicorp/raft, memberlist, net/http, our replication
// stream) reacts to what it sees there: a timeout is not a reset, and a
// simulator that turns every fault into an immediate error tests a
// network nobody runs on.
//
// # Hosts and addresses
//
// A Network has named hosts (node IDs); each gets an IP of 10.0.0.0/16.
// Dial, Listen and datagram addresses are "host:port" with the host's
// name or IP ("", localhost and 127.0.0.1 mean the host itself); sockets
// report "ip:port" as *net.TCPAddr and *net.UDPAddr. Port 0 picks a free
// port.
//
// # Streams
//
// A Conn (net.Conn) is a full-duplex, in-order byte stream. Each direction
// has the sender's send buffer (Config.SendBuffer) and the receiver's
// receive window (Config.Window). Write copies into the send buffer and
// returns; bytes cross the link at once when it carries and the window
// has room; Read takes what has crossed. A reader that stops reading fills
// its window, then the writer's send buffer, then Write blocks: back-pressure
// as TCP's. Deadlines work as on real connections: a passed deadline fails
// the call with an error that is a net.Error with Timeout() true and
// errors.Is os.ErrDeadlineExceeded, and moving a deadline applies to calls
// already waiting. Close sends a FIN behind the data (the peer reads the
// data, then io.EOF); a write to a peer that closed fails with
// ECONNRESET.
//
// # Cut: a dead switch port, not a reset
//
// Network.Cut, CutOneWay, Isolate and Partition take links down, per
// direction. A cut link carries nothing and tells nobody:
//
//   - bytes written toward a cut link stay in the sender's send buffer, as
//     TCP keeps retransmitting them; the reader gets nothing (its deadline
//     expires, if it set one) and the writer blocks once its buffer is
//     full. The heal delivers them, in order, before Heal returns. Bytes
//     that crossed before the cut stay readable: they are in the
//     receiver's kernel already.
//   - FINs and resets travel the links too: a peer that closed, or
//     crashed, behind a cut is noticed only after the heal.
//   - a dial needs both directions (SYN, SYN-ACK): across a cut it waits,
//     with no reset, until its timeout or context ends. That is what a
//     node cut off without a reset costs a real dialer, and why dials
//     must be bounded.
//   - datagrams across a cut are dropped.
//
// CutOneWay makes asymmetric faults: A→B down while B→A carries (A's
// bytes held, B's delivered; dials fail either way).
//
// Fault operations are synchronous: one mutex guards the network, so once
// Cut returns no further byte crosses against it, and once Heal or Resume
// returns what they released has crossed (as far as windows allow).
// Nothing runs in the background: the network has no goroutines, bytes
// move in the callers' Write, Read and fault calls.
//
// # Pause: SIGSTOP
//
// Network.Pause freezes a host as SIGSTOP freezes its process, while the
// others run on. It sends nothing: its writes are held, its datagrams
// dropped, its dials wait. It takes nothing in: its reads, accepts and
// packet reads wait. Its kernel still works: what peers send fills its
// windows (then their writes block), their dials to it complete into its
// backlog, datagrams fill its small queue (Config.DatagramQueue) and
// further ones are dropped, as a full UDP socket buffer drops them.
// Resume lets everything through in order.
//
// # Crash: a process killed, its kernel alive
//
// Network.Crash is kill -9: the host's sockets are gone (their calls fail
// with ErrCrashed, which errors.Is net.ErrClosed), its unsent bytes are
// dropped, and every peer gets a reset (ECONNRESET) once the link from
// the host to it carries. Dials to it are refused (ECONNREFUSED) until
// something listens again; the host stays usable for a restarted process.
// A machine that loses power sends no resets: model it as Isolate, Crash,
// and Reconnect when it boots (the peers then see the resets).
//
// # Datagrams
//
// A PacketConn (net.PacketConn) sends datagrams that are never held: they
// are dropped across a cut, from a paused host, to a port nobody listens
// on, and beyond the receiver's queue. WriteTo succeeds anyway, as UDP's
// does.
//
// # Adapters
//
//   - Host.RaftLayer: a raft.StreamLayer for raft.NewNetworkTransport.
//   - Host.GossipTransport: a memberlist.Transport (packets as datagrams,
//     streams as Conns, one port).
//   - Host.DialContext: http.Transport.DialContext, or any
//     func(ctx, network, addr) dialer (replication.NewTCPTransportDialer).
//   - Host.Listen: a net.Listener for http.Server.Serve,
//     replication.TCPServer.Serve and the like.
//
// Network.Stats counts dials, connections, bytes written, delivered, read,
// held and discarded, and datagrams sent, delivered and dropped.
//
// # Limits
//
//   - Real time, no virtual clock; no latency, no bandwidth limit; bytes
//     cross in the caller's call. Datagrams are not reordered, duplicated
//     or corrupted.
//   - Held bytes wait forever: no retransmission limit (Linux gives up
//     after about 15 minutes), no keepalives, so only deadlines and
//     timeouts of the code under test end a wait.
//   - Only the network is frozen or killed: a paused or crashed host's
//     goroutines and timers run on (its deadlines expire during a pause,
//     where a stopped process sees them only after it resumes). Stop the
//     node's code yourself on a crash.
//   - Close always sends a FIN, even with unread data (Linux sends a
//     reset then); a write to a closed peer fails on the first write once
//     both directions carry (TCP fails the second).
//   - One mutex for the whole network: fine for a handful of nodes in a
//     test, not a benchmark.
package simnet
