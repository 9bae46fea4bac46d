package target

import "net"

// The LoginEnv methods of loginEnv (the rest are in conn.go) that the
// server answers from its own state.

// DiscoveryCHAP implements LoginEnv: the server's current discovery CHAP.
func (e loginEnv) DiscoveryCHAP() *CHAPConfig { return e.c.srv.discoveryCHAP.Load() }

// RemoteAddr implements LoginEnv: the address the initiator connects from.
func (e loginEnv) RemoteAddr() net.Addr { return e.c.nc.RemoteAddr() }
