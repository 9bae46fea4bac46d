package target

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// This file holds a small iSCSI initiator for tests: enough of RFC 7143 to
// log in, run SCSI commands with immediate, unsolicited and solicited data,
// and send any PDU a test wants to, malformed or not.

const (
	ftIQN       = "iqn.2026-11.io.hatgt:test"
	ftInitiator = "iqn.2026-11.io.hatgt:initiator"
	ftBlocks    = 8192 // 4 MiB of 512-byte blocks
)

// ftBackend is an in-memory scsi.Backend.
type ftBackend struct {
	mu   sync.Mutex
	data []byte
}

func (m *ftBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *ftBackend) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("ftBackend: write beyond end")
	}
	return copy(m.data[off:], p), nil
}

func (m *ftBackend) Flush() error { return nil }
func (m *ftBackend) Size() int64  { return int64(len(m.data)) }

// newFTDevice returns a SCSI device with one 4 MiB LU 0 in memory.
func newFTDevice(t testing.TB) (*scsi.Device, *ftBackend) {
	dev := scsi.NewDevice(scsi.DeviceConfig{Logger: ftLogger()})
	be := &ftBackend{data: make([]byte, ftBlocks*512)}
	lu, err := scsi.NewLU(be, scsi.LUConfig{BlockSize: 512, SerialNumber: "test0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	return dev, be
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

// ftEnv is a running Server with one target of one 4 MiB LU.
type ftEnv struct {
	srv     *Server
	addr    string
	dev     *scsi.Device
	backend *ftBackend
}

func ftLogger() *slog.Logger {
	if os.Getenv("HATGT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newFTEnvTB(tb testing.TB) *ftEnv { return newFTEnv(tb, nil) }

func newFTEnv(t testing.TB, mod func(*ServerConfig)) *ftEnv {
	t.Helper()
	cfg := ServerConfig{Logger: ftLogger(), NopInInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dev, be := newFTDevice(t)
	if err := srv.AddTarget(TargetConfig{Name: ftIQN, Device: dev}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &ftEnv{srv: srv, addr: ln.Addr().String(), dev: dev, backend: be}
}

// initiator is one connection of the test initiator.
type initiator struct {
	t   testing.TB
	nc  net.Conn
	br  *bufio.Reader
	dig Digests

	isid      [6]byte
	tsih      uint16
	cid       uint16
	itt       uint32
	cmdSN     uint32
	expStatSN uint32
	expCmdSN  uint32
	maxCmdSN  uint32

	// Negotiated results as the target answered them.
	neg map[string]string
	// targetMRDSL bounds what this initiator may send in one PDU.
	targetMRDSL uint32
}

func ftDial(t testing.TB, addr string) *initiator {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &initiator{t: t, nc: nc, br: bufio.NewReader(nc), itt: 0x100, cmdSN: 1, targetMRDSL: 8192,
		isid: [6]byte{0x80, 0, 0, 0, 0, 1}}
}

// loginOpts describes a login. Keys override or add to the default
// operational offer.
type loginOpts struct {
	isid      *[6]byte
	tsih      uint16
	cid       uint16
	discovery bool
	target    string
	keys      []KV
}

// ftOffer is what the test initiator offers unless a test changes it.
var ftOffer = []KV{
	{"HeaderDigest", "None"}, {"DataDigest", "None"},
	{"ImmediateData", "Yes"}, {"InitialR2T", "No"},
	{"MaxRecvDataSegmentLength", "262144"}, {"MaxBurstLength", "1048576"},
	{"FirstBurstLength", "262144"}, {"MaxOutstandingR2T", "8"},
	{"ErrorRecoveryLevel", "0"}, {"DefaultTime2Wait", "2"}, {"DefaultTime2Retain", "0"},
	{"MaxConnections", "8"},
}

// login runs a login in the operational stage straight to full feature
// phase. It returns the login status (0 on success) or an error.
func (in *initiator) login(o loginOpts) (LoginStatus, error) {
	if o.isid != nil {
		in.isid = *o.isid
	}
	in.tsih, in.cid = o.tsih, o.cid
	kvs := []KV{{"InitiatorName", ftInitiator}}
	if o.discovery {
		kvs = append(kvs, KV{"SessionType", "Discovery"})
	} else {
		kvs = append(kvs, KV{"SessionType", "Normal"}, KV{"TargetName", cmpOr(o.target, ftIQN)})
	}
	offer := map[string]int{}
	for _, kv := range ftOffer {
		offer[kv.Key] = len(kvs)
		kvs = append(kvs, kv)
	}
	for _, kv := range o.keys {
		if i, ok := offer[kv.Key]; ok {
			kvs[i] = kv
		} else {
			kvs = append(kvs, kv)
		}
	}
	if o.discovery || o.tsih != 0 {
		// Session-wide keys are irrelevant to discovery and later connections;
		// offering them is still allowed.
	}
	in.neg = map[string]string{}
	data := EncodeText(kvs)
	for {
		p := NewPDU(OpLoginReq)
		p.SetImmediate(true)
		p.SetFlags(0x80 | 1<<2 | 3) // T, CSG=operational, NSG=full feature
		copy(p.BHS[8:14], in.isid[:])
		p.SetU16(14, in.tsih)
		p.SetITT(in.itt)
		p.SetU16(20, in.cid)
		p.SetCmdSN(in.cmdSN)
		p.SetExpStatSN(in.expStatSN)
		p.Data = data
		if _, err := in.nc.Write(p.Encode(Digests{})); err != nil {
			return 0, err
		}
		in.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, err := ReadPDU(in.br, Digests{}, 0)
		if err != nil {
			return 0, err
		}
		if r.Opcode() != OpLoginResp {
			return 0, fmt.Errorf("login: got %v", r.Opcode())
		}
		st := LoginStatus(uint16(r.BHS[36])<<8 | uint16(r.BHS[37]))
		if st != LoginSuccess {
			return st, nil
		}
		in.expStatSN = r.StatSN() + 1
		in.expCmdSN, in.maxCmdSN = r.ExpCmdSN(), r.MaxCmdSN()
		if len(r.Data) > 0 {
			got, err := ParseText(r.Data)
			if err != nil {
				return 0, err
			}
			for _, kv := range got {
				in.neg[kv.Key] = kv.Value
			}
		}
		data = nil
		if r.Flags()&0x80 != 0 && r.Flags()&3 == 3 {
			in.tsih = r.U16(14)
			break
		}
	}
	in.itt++
	if v, ok := in.neg["MaxRecvDataSegmentLength"]; ok {
		n, _ := strconv.Atoi(v)
		in.targetMRDSL = uint32(n)
	}
	in.dig = Digests{Header: in.neg["HeaderDigest"] == "CRC32C", Data: in.neg["DataDigest"] == "CRC32C"}
	return LoginSuccess, nil
}

func (in *initiator) mustLogin(o loginOpts) {
	in.t.Helper()
	st, err := in.login(o)
	if err != nil || st != LoginSuccess {
		in.t.Fatalf("login: status %#04x, err %v", uint16(st), err)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// negNum returns a negotiated number, or def when the target did not
// answer the key.
func (in *initiator) negNum(key string, def uint32) uint32 {
	if v, ok := in.neg[key]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			return uint32(n)
		}
	}
	return def
}

func (in *initiator) negBool(key string, def bool) bool {
	if v, ok := in.neg[key]; ok {
		return v == "Yes"
	}
	return def
}

func (in *initiator) nextITT() uint32 { in.itt++; return in.itt }

// send writes p with the connection's digests, filling ExpStatSN.
func (in *initiator) send(p *PDU) {
	in.t.Helper()
	if p.Opcode() != OpDataOut {
		p.SetExpStatSN(in.expStatSN)
	}
	if _, err := in.nc.Write(p.Encode(in.dig)); err != nil {
		in.t.Fatalf("send %v: %v", p.Opcode(), err)
	}
}

// recv reads one PDU (10 s at most), tracking StatSN and the window.
func (in *initiator) recv() (*PDU, error) {
	in.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := ReadPDU(in.br, in.dig, 0)
	if err != nil {
		return p, err
	}
	switch p.Opcode() {
	case OpDataIn:
		if p.Flags()&flagStatus == 0 {
			break
		}
		fallthrough
	case OpSCSIResponse, OpTaskMgmtResp, OpTextResp, OpLogoutResp, OpReject:
		in.expStatSN = p.StatSN() + 1
	case OpNopIn:
		if p.ITT() != ReservedTag {
			in.expStatSN = p.StatSN() + 1
		}
	}
	in.expCmdSN, in.maxCmdSN = p.ExpCmdSN(), p.MaxCmdSN()
	return p, nil
}

func (in *initiator) mustRecv() *PDU {
	in.t.Helper()
	p, err := in.recv()
	if err != nil {
		in.t.Fatalf("recv: %v", err)
	}
	return p
}

// expectClosed reads until the target closes the connection.
func (in *initiator) expectClosed() {
	in.t.Helper()
	for i := 0; i < 1000; i++ {
		if _, err := in.recv(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				in.t.Fatalf("connection still open: %v", err)
			}
			return
		}
	}
	in.t.Fatal("connection still open after 1000 PDUs")
}

// scsiCmd builds a SCSI Command PDU (non-immediate, next CmdSN).
func (in *initiator) scsiCmd(cdb []byte, read, write bool, edtl uint32) *PDU {
	p := NewPDU(OpSCSICommand)
	f := byte(cmdFinal | 1) // simple
	if read {
		f |= cmdRead
	}
	if write {
		f |= cmdWrite
	}
	p.SetFlags(f)
	p.SetLUN(0)
	p.SetITT(in.nextITT())
	p.SetU32(offExpDataLen, edtl)
	p.SetCmdSN(in.cmdSN)
	in.cmdSN++
	copy(p.BHS[offCDB:offCDB+16], cdb)
	return p
}

// result is what a test initiator learned about one command.
type cmdResult struct {
	status   scsi.Status
	sense    []byte
	data     []byte
	flags    byte // residual flags of the final PDU
	residual uint32
	dataIns  []*PDU
	r2ts     []*PDU
}

// exec runs a command to completion: immediate data and unsolicited
// Data-Out as negotiated, R2Ts answered, Data-In collected.
func (in *initiator) exec(cdb []byte, read bool, out []byte, edtl uint32) *cmdResult {
	in.t.Helper()
	write := out != nil
	p := in.scsiCmd(cdb, read, write, edtl)
	itt := p.ITT()
	first := in.negNum("FirstBurstLength", 65536)
	seg := in.targetMRDSL
	var sent uint32
	if write && in.negBool("ImmediateData", true) {
		n := min(uint32(len(out)), first, seg)
		p.Data = out[:n]
		sent = n
	}
	unsol := write && !in.negBool("InitialR2T", true) && sent < min(first, uint32(len(out)))
	if unsol {
		p.SetFlags(p.Flags() &^ cmdFinal)
	}
	in.send(p)
	if unsol {
		end := min(first, uint32(len(out)))
		in.sendData(itt, ReservedTag, out, sent, end-sent)
	}
	res := &cmdResult{}
	for {
		r := in.mustRecv()
		if r.ITT() != itt {
			in.t.Fatalf("unexpected %v for ITT %#x while waiting for %#x", r.Opcode(), r.ITT(), itt)
		}
		switch r.Opcode() {
		case OpR2T:
			res.r2ts = append(res.r2ts, r)
			in.sendData(itt, r.TTT(), out, r.BufferOffset(), r.U32(offDesiredLen))
		case OpDataIn:
			res.dataIns = append(res.dataIns, r)
			if int(r.BufferOffset()) != len(res.data) {
				in.t.Fatalf("Data-In offset %d, have %d bytes", r.BufferOffset(), len(res.data))
			}
			res.data = append(res.data, r.Data...)
			if r.Flags()&flagStatus != 0 {
				res.status = scsi.Status(r.BHS[3])
				res.flags = r.Flags() & (flagOverflow | flagUnderflow)
				res.residual = r.U32(offResidual)
				return res
			}
		case OpSCSIResponse:
			res.status = scsi.Status(r.BHS[3])
			res.flags = r.Flags() & (flagOverflow | flagUnderflow)
			res.residual = r.U32(offResidual)
			if len(r.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(r.Data))
				res.sense = r.Data[2 : 2+n]
			}
			return res
		default:
			in.t.Fatalf("unexpected %v", r.Opcode())
		}
	}
}

// sendData sends out[off:off+n] as Data-Out PDUs of at most the target's
// MaxRecvDataSegmentLength, DataSN from 0, F on the last.
func (in *initiator) sendData(itt, ttt uint32, out []byte, off, n uint32) {
	var sn uint32
	for end := off + n; off < end; sn++ {
		l := min(end-off, in.targetMRDSL)
		d := NewPDU(OpDataOut)
		d.SetITT(itt)
		d.SetTTT(ttt)
		d.SetExpStatSN(in.expStatSN)
		d.SetDataSN(sn)
		d.SetBufferOffset(off)
		d.Data = out[off : off+l]
		off += l
		d.SetFinal(off == end)
		in.send(d)
	}
}

// Common CDBs.
func cdbRead10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x28
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func cdbWrite10(lba uint32, blocks uint16) []byte {
	c := cdbRead10(lba, blocks)
	c[0] = 0x2a
	return c
}

var cdbTUR = make([]byte, 6)

// ready clears the unit attention a new nexus gets (POWER ON, RESET).
func (in *initiator) ready() {
	in.t.Helper()
	for i := 0; i < 4; i++ {
		if r := in.exec(cdbTUR, false, nil, 0); r.status == scsi.StatusGood {
			return
		}
	}
	in.t.Fatal("TEST UNIT READY never returned GOOD")
}

// ping sends an immediate NOP-Out and returns the NOP-In answering it;
// PDUs received before it are returned too.
func (in *initiator) ping(data []byte) (*PDU, []*PDU) {
	in.t.Helper()
	p := NewPDU(OpNopOut)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	p.Data = data
	in.send(p)
	var before []*PDU
	for {
		r := in.mustRecv()
		if r.Opcode() == OpNopIn && r.ITT() == p.ITT() {
			return r, before
		}
		before = append(before, r)
	}
}

func ftPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// bytes returns a copy of the backend's bytes [from, to).
func (m *ftBackend) bytes(from, to int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data[from:to]...)
}

// fill copies p into the backend at off.
func (m *ftBackend) fill(off int, p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }
