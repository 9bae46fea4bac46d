package scsi

func cacheCommands() []opInfo {
	return []opInfo{
		{name: "SYNCHRONIZE CACHE(10)", opcode: opSyncCache10, cdbLen: 10, fn: cmdSyncCache,
			usage: []byte{opSyncCache10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00}},
		{name: "SYNCHRONIZE CACHE(16)", opcode: opSyncCache16, cdbLen: 16, fn: cmdSyncCache,
			usage: []byte{opSyncCache16, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}},
	}
}

// cmdSyncCache is SYNCHRONIZE CACHE (10/16): the range is checked (0
// blocks means to the end of the medium) and the whole backend flushed.
// IMMED is honoured by completing only after the flush, which SBC-3
// permits.
func cmdSyncCache(t *task) error {
	var lba, n uint64
	if len(t.cdb) == 10 {
		lba, n = uint64(be32(t.cdb[2:])), uint64(be16(t.cdb[7:]))
	} else {
		lba, n = be64(t.cdb[2:]), uint64(be32(t.cdb[10:]))
	}
	if err := t.lu.checkRange(lba, n); err != nil {
		return err
	}
	return t.lu.flush()
}
