package redistest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal asks Linux to kill redis-server if the test binary dies
// without running its cleanups (a panic on -timeout, a kill -9), so no
// orphan keeps a port and a CPU busy.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
