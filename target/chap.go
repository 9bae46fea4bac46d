package target

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strconv"
	"strings"
)

// CHAP authentication of the security stage (RFC 1994, RFC 7143 section
// 12.1.3). The target is the authenticator: it picks the algorithm from
// the initiator's CHAP_A list, sends an identifier and a random challenge,
// and checks the initiator's CHAP_N and CHAP_R. When the initiator sends
// its own CHAP_I and CHAP_C (mutual CHAP), the target answers with its
// MutualUser name and the response computed with MutualSecret.
//
// Errors never contain a secret, a challenge or a response.

// CHAP algorithms (CHAP_A values, IANA "PPP Authentication Algorithms").
const (
	chapMD5    = 5
	chapSHA256 = 7
)

// chapAlgorithms are the algorithms the target accepts.
var chapAlgorithms = map[uint64]func() hash.Hash{
	chapMD5:    md5.New,
	chapSHA256: sha256.New,
}

// maxCHAPBinary bounds decoded CHAP_C and CHAP_R values (RFC 7143
// section 12.1.3: 1024 bytes).
const maxCHAPBinary = 1024

var (
	errCHAPProtocol = errors.New("CHAP keys out of order or malformed")
	errCHAPFailed   = errors.New("CHAP authentication failed")
)

type chapStep uint8

const (
	chapWaitAlgorithm chapStep = iota // AuthMethod=CHAP agreed, expecting CHAP_A
	chapWaitResponse                  // challenge sent, expecting CHAP_N/CHAP_R
	chapDone                          // initiator authenticated
)

// chapServer is the target side of one CHAP exchange.
type chapServer struct {
	cfg       *CHAPConfig
	rand      io.Reader
	step      chapStep
	newHash   func() hash.Hash
	id        byte
	challenge []byte
	user      string // CHAP_N as the initiator sent it, for logs
}

func newCHAPServer(cfg *CHAPConfig, rand io.Reader) *chapServer {
	return &chapServer{cfg: cfg, rand: rand}
}

// chapKeys are the CHAP keys of one request.
type chapKeys map[string]string

// algorithm handles CHAP_A: it picks the first algorithm of the list that
// the target supports and returns CHAP_A, CHAP_I and CHAP_C to send.
func (c *chapServer) algorithm(list string) ([]KV, error) {
	if c.step != chapWaitAlgorithm {
		return nil, errCHAPProtocol
	}
	alg := uint64(0)
	for _, v := range strings.Split(list, ",") {
		n, ok := parseNumber(v)
		if !ok {
			continue
		}
		if _, ok := chapAlgorithms[n]; ok {
			alg = n
			break
		}
	}
	if alg == 0 {
		return nil, errors.New("CHAP: no supported algorithm offered")
	}
	c.newHash = chapAlgorithms[alg]
	size := max(16, c.newHash().Size())
	buf := make([]byte, 1+size)
	if _, err := io.ReadFull(c.rand, buf); err != nil {
		return nil, errors.New("CHAP: no random challenge available")
	}
	c.id, c.challenge = buf[0], buf[1:]
	c.step = chapWaitResponse
	return []KV{
		{Key: "CHAP_A", Value: strconv.FormatUint(alg, 10)},
		{Key: "CHAP_I", Value: strconv.Itoa(int(c.id))},
		{Key: "CHAP_C", Value: "0x" + hex.EncodeToString(c.challenge)},
	}, nil
}

// response checks the initiator's CHAP_N/CHAP_R and, for mutual CHAP, its
// CHAP_I/CHAP_C; it returns the target's CHAP_N/CHAP_R when mutual.
func (c *chapServer) response(k chapKeys) ([]KV, error) {
	if c.step != chapWaitResponse {
		return nil, errCHAPProtocol
	}
	name, okN := k["CHAP_N"]
	c.user = name
	resp, okR := k["CHAP_R"]
	if !okN || !okR {
		return nil, errors.New("CHAP: CHAP_N or CHAP_R missing")
	}
	got, err := decodeBinary(resp)
	if err != nil {
		return nil, errors.New("CHAP: malformed CHAP_R")
	}
	// Compare name and response of every account, without an early exit
	// on a name: the time taken does not tell which names exist.
	passed := 0
	for _, u := range c.cfg.accounts() {
		want := chapDigest(c.newHash, c.id, u.Secret, c.challenge)
		nameOK := subtle.ConstantTimeCompare([]byte(name), []byte(u.User))
		passed |= nameOK & subtle.ConstantTimeCompare(got, want)
	}
	if passed != 1 {
		return nil, errCHAPFailed
	}
	c.step = chapDone

	idStr, okI := k["CHAP_I"]
	chalStr, okC := k["CHAP_C"]
	if !okI && !okC {
		return nil, nil
	}
	if !okI || !okC {
		return nil, errors.New("CHAP: mutual CHAP needs both CHAP_I and CHAP_C")
	}
	if c.cfg.MutualSecret == "" {
		return nil, errors.New("CHAP: mutual CHAP requested but not configured")
	}
	id, ok := parseNumber(idStr)
	if !ok || id > 255 {
		return nil, errors.New("CHAP: malformed CHAP_I")
	}
	chal, err := decodeBinary(chalStr)
	if err != nil || len(chal) == 0 {
		return nil, errors.New("CHAP: malformed CHAP_C")
	}
	if bytes.Equal(chal, c.challenge) {
		return nil, errors.New("CHAP: initiator reflected the target's challenge")
	}
	r := chapDigest(c.newHash, byte(id), c.cfg.MutualSecret, chal)
	return []KV{
		{Key: "CHAP_N", Value: c.cfg.MutualUser},
		{Key: "CHAP_R", Value: "0x" + hex.EncodeToString(r)},
	}, nil
}

// accounts lists every user/secret pair an initiator may authenticate as.
func (c *CHAPConfig) accounts() []CHAPUser {
	return append([]CHAPUser{{User: c.User, Secret: c.Secret}}, c.MoreUsers...)
}

// chapDigest is the CHAP response H(id || secret || challenge).
func chapDigest(newHash func() hash.Hash, id byte, secret string, challenge []byte) []byte {
	h := newHash()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// decodeBinary decodes a binary value: "0x" followed by hex digits (an odd
// count gets a leading zero nibble) or "0b" followed by base64 (RFC 7143
// section 6.1).
func decodeBinary(s string) ([]byte, error) {
	if len(s) < 3 {
		return nil, errCHAPProtocol
	}
	var b []byte
	var err error
	switch s[:2] {
	case "0x", "0X":
		digits := s[2:]
		if len(digits)%2 == 1 {
			digits = "0" + digits
		}
		b, err = hex.DecodeString(digits)
	case "0b", "0B":
		b, err = base64.StdEncoding.DecodeString(s[2:])
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(s[2:])
		}
	default:
		return nil, errCHAPProtocol
	}
	if err != nil || len(b) > maxCHAPBinary {
		return nil, errCHAPProtocol
	}
	return b, nil
}
