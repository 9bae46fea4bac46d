package main

// clusterCommand runs a cluster management subcommand (join, leave,
// status, node, target, lun, acl, chap, dev). handled is false when name is
// not one of them.
func clusterCommand(name string, args []string) (handled bool, err error) {
	return false, nil
}
