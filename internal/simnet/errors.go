package simnet

import "net"

// ErrCrashed is the error of every operation on a connection, listener or
// packet socket of a host after Network.Crash: the process that owned it
// is gone. errors.Is(ErrCrashed, net.ErrClosed) holds, so code that stops
// on a closed listener stops on a crashed one.
var ErrCrashed error = crashedError{}

type crashedError struct{}

func (crashedError) Error() string {
	return "simnet: the host crashed (Network.Crash): this socket belonged to the dead process; open a new one"
}

func (crashedError) Is(target error) bool { return target == net.ErrClosed }
