//go:build !unix

package main

import "time"

// processCPU is not measured on this platform; the CPU/req column then
// shows only redis-server's share.
func processCPU() time.Duration { return 0 }
