#!/usr/bin/env python3
"""relay.py - the namespace side of test/vm/run-vm.sh's portal relays.

Run by in-netns.sh inside the VM's private network namespace:

    relay.py HOST_PID GUEST_PORT SOCKET HOST_ADDR HOST_PORT [GUEST_PORT ...]

For each portal (four arguments each) it listens on 127.0.0.1:GUEST_PORT,
where qemu's user-mode network sends the guest's 10.0.2.2:GUEST_PORT, and
passes every connection on to the unix socket SOCKET, on which run-vm.sh's
socat in the host namespace listens and connects to HOST_ADDR:HOST_PORT.

It listens only while the portal does, as the host namespace's TCP table
(/proc/HOST_PID/net/tcp, tcp6) shows: polled every 50 ms, and read again
before it closes a connection the portal closed. So a guest connecting to
a portal that is down is refused (qemu answers the guest's SYN with RST),
as on a real network, instead of being accepted and closed at once, after
which open-iscsi stops reconnecting. When the portal closes a connection
and is no longer listening, the listener goes first, then the connection:
the initiator's immediate reconnect is refused, not accepted.

Runs until killed. Errors of one connection end that connection only.
"""
import os
import selectors
import socket
import struct
import sys
import threading
import time

POLL = 0.05


def listening_ports(host_pid):
    """(addr, port) of every LISTEN socket in the host namespace; addr
    "0.0.0.0" for a wildcard (IPv4 or IPv6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (host_pid, name)) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            port = int(port_hex, 16)
            if name == "tcp":
                addr = socket.inet_ntoa(struct.pack("<I", int(addr_hex, 16)))
            elif addr_hex == "0" * 32:
                addr = "0.0.0.0"
            elif addr_hex.startswith("0000000000000000FFFF0000"):  # ::ffff:a.b.c.d
                addr = socket.inet_ntoa(struct.pack("<I", int(addr_hex[24:], 16)))
            else:
                continue
            found.add((addr, port))
    return found


class Portal:
    def __init__(self, relay, guest_port, sock_path, host_addr, host_port):
        self.relay = relay
        self.guest_port = guest_port
        self.sock_path = sock_path
        self.host = (host_addr, host_port)
        self.listener = None
        self.gone = threading.Event()  # set once the listener was closed for a dead portal

    def up(self, table=None):
        table = table if table is not None else listening_ports(self.relay.host_pid)
        return self.host in table or ("0.0.0.0", self.host[1]) in table

    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.guest_port))
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.relay.sel.register(s, selectors.EVENT_READ, self)

    def close(self):
        if self.listener is not None:
            self.relay.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def accept(self):
        try:
            guest, _ = self.listener.accept()
        except OSError:
            return
        guest.setblocking(True)
        guest.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self.serve, args=(guest,), daemon=True).start()

    def serve(self, guest):
        back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            back.connect(self.sock_path)
        except OSError:
            back.close()
            self.reset(guest)
            guest.close()
            return
        to_portal = threading.Thread(target=self.pump, args=(guest, back), daemon=True)
        to_portal.start()
        sent = self.pump(back, guest)
        if self.portal_died() and sent == 0:
            # the portal was down when this connection came: refuse it
            # after the fact (RST) rather than close it
            self.reset(guest)
            try:
                guest.shutdown(socket.SHUT_RD)  # ends the other pump
            except OSError:
                pass
        else:
            try:
                guest.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        to_portal.join()
        guest.close()
        back.close()

    @staticmethod
    def pump(src, dst):
        """Copy src to dst until EOF or an error; half-close dst if it is
        the unix side. Returns the bytes copied."""
        sent = 0
        while True:
            try:
                data = src.recv(262144)
            except OSError:
                data = b""
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
            sent += len(data)
        if dst.family == socket.AF_UNIX:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return sent

    def portal_died(self):
        """True (and the listener closed, by the main thread) if the portal
        is no longer listening; looks three times over ~40 ms, as a killed
        target's listening socket can close just after its connections."""
        for wait in (0, 0.01, 0.03):
            time.sleep(wait)
            if not self.up():
                self.gone.clear()
                self.relay.wake(self)
                self.gone.wait(1)
                return True
        return False

    @staticmethod
    def reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


class Relay:
    def __init__(self, host_pid, specs):
        self.host_pid = host_pid
        self.sel = selectors.DefaultSelector()
        self.portals = [Portal(self, *spec) for spec in specs]
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.dying = []

    def wake(self, portal):
        with self.lock:
            self.dying.append(portal)
        os.write(self.wake_w, b"x")

    def run(self):
        while True:
            table = listening_ports(self.host_pid)
            for p in self.portals:
                if p.listener is None and p.up(table):
                    try:
                        p.open()
                    except OSError as e:
                        print("relay.py: cannot listen on 127.0.0.1:%d: %s" % (p.guest_port, e), file=sys.stderr)
                elif p.listener is not None and not p.up(table):
                    p.close()
            for key, _ in self.sel.select(POLL):
                if key.data is None:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    with self.lock:
                        dying, self.dying = self.dying, []
                    for p in dying:
                        p.close()
                        p.gone.set()
                elif key.data.listener is not None:
                    key.data.accept()


def main(argv):
    if len(argv) < 6 or (len(argv) - 2) % 4:
        print("usage: relay.py HOST_PID GUEST_PORT SOCKET HOST_ADDR HOST_PORT [...]", file=sys.stderr)
        return 2
    args = argv[2:]
    specs = [(int(args[i]), args[i + 1], args[i + 2], int(args[i + 3])) for i in range(0, len(args), 4)]
    Relay(int(argv[1]), specs).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
