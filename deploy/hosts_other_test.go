//go:build !linux

package deploy_test

// execWithHosts is the helper of the private-/etc/hosts test, which runs
// on Linux only.
func execWithHosts() {}
