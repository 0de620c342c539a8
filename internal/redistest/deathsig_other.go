//go:build !linux

package redistest

import "os/exec"

// setDeathSignal does nothing outside Linux: there is no portable way to
// tie a child's life to ours, so a crashed test may leave redis-server
// running until it is killed by hand.
func setDeathSignal(cmd *exec.Cmd) {}
