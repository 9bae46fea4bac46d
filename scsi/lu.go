package scsi

import (
	"errors"
	"log/slog"
)

// LUConfig describes a logical unit. Zero values get defaults from
// (*LUConfig).setDefaults.
type LUConfig struct {
	// BlockSize is the logical block size: 512 or 4096.
	BlockSize uint32
	// PhysicalBlockSize is reported in READ CAPACITY(16) and drives the
	// Block Limits granularities: 0 means BlockSize; 4096 on a 512-byte
	// LU tells initiators to align to the 4 KiB blocks of the file or
	// device below (512e). libiscsi 1.19's GetLBAStatus.UnmapSingle
	// assumes one logical block per physical block, so the default keeps
	// them equal.
	PhysicalBlockSize uint32
	// ReadOnly makes every medium-modifying command fail with DATA
	// PROTECT, WRITE PROTECTED.
	ReadOnly bool
	// WriteCache reports WCE=1 in the caching mode page (IO mode wb): the
	// backend may hold writes until SYNCHRONIZE CACHE or FUA. With
	// WriteCache false (wt) every write is durable before status.
	WriteCache bool
	// Thin enables logical block provisioning (LBPME, UNMAP, WRITE SAME
	// with UNMAP, GET LBA STATUS); it needs a Backend that is an Unmapper.
	Thin bool
	// VendorID (8), ProductID (16), Revision (4) for INQUIRY.
	VendorID  string
	ProductID string
	Revision  string
	// SerialNumber for VPD 0x80; DeviceID (16 bytes) is the NAA IEEE
	// Registered Extended designator for VPD 0x83. Both must be stable
	// across restarts and, in a cluster, identical on every node serving
	// the LU.
	SerialNumber string
	DeviceID     [16]byte
	// Reservations holds persistent reservation state; nil means an
	// in-memory store private to this LU.
	Reservations ReservationStore
	// PortGroups reports ALUA access states; nil means one
	// Active/Optimized group containing every port.
	PortGroups PortGroupState
	// SanitizeRate bounds a SANITIZE overwrite, in bytes per second, so
	// that it leaves the disk usable for other LUs (default 128 MiB/s;
	// negative: unlimited).
	SanitizeRate int64
	Logger       *slog.Logger
}

func (c *LUConfig) setDefaults() {
	if c.BlockSize == 0 {
		c.BlockSize = 512
	}
	if c.SanitizeRate == 0 {
		c.SanitizeRate = 128 << 20
	}
	if c.VendorID == "" {
		c.VendorID = "HATGT"
	}
	if c.ProductID == "" {
		c.ProductID = "VIRTUAL-DISK"
	}
	if c.Revision == "" {
		c.Revision = "0001"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports configuration errors.
func (c *LUConfig) Validate() error {
	if c.BlockSize != 512 && c.BlockSize != 4096 {
		return errors.New("scsi: block size must be 512 or 4096")
	}
	if p := c.PhysicalBlockSize; p != 0 && (p < c.BlockSize || p > 4096 || p&(p-1) != 0) {
		return errors.New("scsi: physical block size must be a power of two from the block size to 4096")
	}
	return nil
}

// LU is a logical unit: a Backend plus the SCSI state around it (mode
// pages, unit attentions, reservations, task set).
type LU struct {
	cfg     LUConfig
	backend Backend
	blocks  uint64 // capacity in logical blocks
	shift   uint   // log2(BlockSize)

	ua     uaState     // ua.go: pending unit attentions per nexus
	tasks  taskSet     // taskset.go: commands in execution, task attributes
	mode   modeState   // mode.go: mode pages (current, default, changeable)
	pr     prState     // pr.go: persistent reservations, RESERVE/RELEASE
	alua   aluaState   // alua.go: port groups and access states
	atomic atomicState // atomic.go: COMPARE AND WRITE / WRITE ATOMIC serialisation
	copy   copyState   // xcopy.go: EXTENDED COPY operations and results
}

// NewLU returns a logical unit serving backend.
func NewLU(backend Backend, cfg LUConfig) (*LU, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lu := &LU{cfg: cfg, backend: backend}
	for lu.shift = 0; 1<<lu.shift < cfg.BlockSize; lu.shift++ {
	}
	lu.blocks = uint64(backend.Size()) >> lu.shift
	lu.mode.init(lu)
	for _, init := range []func(*LU) error{lu.pr.init, lu.alua.init, lu.atomic.init, lu.copy.init} {
		if err := init(lu); err != nil {
			return nil, err
		}
	}
	return lu, nil
}

// BlockSize returns the logical block size in bytes.
func (lu *LU) BlockSize() uint32 { return lu.cfg.BlockSize }

// Blocks returns the capacity in logical blocks.
func (lu *LU) Blocks() uint64 { return lu.blocks }
