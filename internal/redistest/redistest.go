// Package redistest starts throwaway redis-server processes for tests: a
// single node or a three-master Redis Cluster, each on free 127.0.0.1 ports,
// with persistence off, in a temporary directory that is removed afterwards.
//
// It never touches a Redis that is already running, unless the developer
// points it at one explicitly with TOLLGATE_TEST_REDIS_ADDR (single node) or
// TOLLGATE_TEST_REDIS_CLUSTER_ADDRS (cluster). When redis-server (and, for a
// cluster, redis-cli) is not on PATH, tests are skipped with a message saying
// how to enable them, except under CI (CI set and not "false"), where they
// fail: a CI run that silently skips the Redis tests proves nothing.
//
// Typical use:
//
//	srv := redistest.Start(t)  // stopped and deleted in t.Cleanup
//	rdb := srv.Client(t)       // closed in t.Cleanup
//
// A test that stops the server (to check how its caller fails while Redis is
// down) uses StartOwn, which never reuses an external server, then Stop and
// Restart, or Pause and Resume to make it hang (SIGSTOP) rather than refuse
// connections. StartOwnWith starts one with other settings (AOF on, an
// eviction policy, a renamed command). Launch and LaunchCluster do the same
// without a testing.TB, for a TestMain that shares one server across a
// package; call Close after m.Run.
//
// The package does not flush, select databases or create keys: tests that
// share a server must use their own key names and delete them afterwards.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testdeps"
)

// Environment variables that point the helpers at servers started by the
// developer instead of starting new ones.
const (
	// EnvAddr is host:port of an existing single Redis that Start uses
	// instead of starting one.
	EnvAddr = "TOLLGATE_TEST_REDIS_ADDR"
	// EnvClusterAddrs is a comma-separated list of host:port of an existing
	// Redis Cluster's masters that StartCluster uses instead of starting one.
	EnvClusterAddrs = "TOLLGATE_TEST_REDIS_CLUSTER_ADDRS"
)

// How long a server may take to start, a cluster to form, and a server to
// stop after SIGTERM before it is killed. Generous because CI machines are
// small and run the race detector.
const (
	startTimeout   = 20 * time.Second
	clusterTimeout = 60 * time.Second
	stopTimeout    = 10 * time.Second
)

// ErrNotInstalled reports that redis-server or redis-cli is not on PATH.
var ErrNotInstalled = errors.New("redistest: redis-server/redis-cli not found on PATH")

// Server is one redis-server process, or an external server named by
// EnvAddr. Its methods are safe for concurrent use.
type Server struct {
	// Addr is the server's host:port.
	Addr string

	external bool
	dir      string // temporary directory holding the log and nodes.conf
	ownsDir  bool   // dir is removed by Close
	logPath  string
	args     []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Cluster is a Redis Cluster of three masters and no replicas, or an
// external cluster named by EnvClusterAddrs.
type Cluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
	nodes []*Server
}

// InCI reports whether the CI environment variable is set to something
// other than "false" or "0"; Redis-backed tests then fail instead of
// skipping when Redis is missing.
func InCI() bool { return testdeps.InCI() }

// Require skips tb, or fails it under CI, unless redis-server (and
// redis-cli when cluster is true) is on PATH. Start and StartCluster call
// it; call it yourself before Launch in TestMain-less setups.
func Require(tb testing.TB, cluster bool) {
	tb.Helper()
	tools := []string{testdeps.RedisServer}
	if cluster {
		tools = append(tools, testdeps.RedisCLI)
	}
	if err := testdeps.Check(tools...); err != nil {
		msg := fmt.Sprintf("%v, to run the Redis-backed tests; or set %s=host:port (and %s=host:port,... for a cluster) to use servers you started", err, EnvAddr, EnvClusterAddrs)
		if InCI() {
			tb.Fatal(msg + " (failing instead of skipping because CI is set)")
		}
		tb.Skip(msg)
	}
}

func lookPath(cluster bool) error {
	bins := []string{"redis-server"}
	if cluster {
		bins = append(bins, "redis-cli")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotInstalled, b, err)
		}
	}
	return nil
}

// Start returns a single Redis for tb: the server named by EnvAddr if set,
// otherwise a new redis-server on a free port, stopped and deleted when tb
// ends. Without redis-server it skips tb (fails it under CI).
func Start(tb testing.TB) *Server {
	tb.Helper()
	if addr := strings.TrimSpace(os.Getenv(EnvAddr)); addr != "" {
		return &Server{Addr: addr, external: true}
	}
	return StartOwn(tb)
}

// StartOwn is Start without EnvAddr: it always starts a new redis-server,
// so the test may Stop and Restart it.
func StartOwn(tb testing.TB) *Server {
	tb.Helper()
	return StartOwnWith(tb)
}

// StartOwnWith is StartOwn with extra redis-server arguments, given as on
// its command line and applied after the defaults, so that they override
// them: for example "--appendonly", "yes" for a server whose data survives
// Stop and Restart, or "--maxmemory-policy", "allkeys-lru".
func StartOwnWith(tb testing.TB, args ...string) *Server {
	tb.Helper()
	Require(tb, false)
	s, err := LaunchWith(args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// Launch starts a new redis-server on a free 127.0.0.1 port with
// persistence off, in a new temporary directory. The caller must Close it.
// It returns an error wrapping ErrNotInstalled when redis-server is missing.
func Launch() (*Server, error) {
	return LaunchWith()
}

// LaunchWith is Launch with extra redis-server arguments; see StartOwnWith.
func LaunchWith(args ...string) (*Server, error) {
	if err := lookPath(false); err != nil {
		return nil, err
	}
	return launch(false, args...)
}

func launch(cluster bool, extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "tollgate-redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	var lastErr error
	// A free port can be taken by someone else between our probe and the
	// server's bind; try a few.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(cluster)
		if err != nil {
			lastErr = err
			continue
		}
		s := &Server{
			Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			dir:     dir,
			ownsDir: true,
			logPath: filepath.Join(dir, "redis.log"),
		}
		s.args = []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--logfile", s.logPath,
			"--daemonize", "no",
		}
		if cluster {
			s.args = append(s.args,
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "5000",
			)
		}
		s.args = append(s.args, extra...)
		if err := s.start(); err != nil {
			lastErr = err
			continue
		}
		return s, nil
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// freePort returns a port on 127.0.0.1 that is free now; for a cluster node
// its bus port (port+10000) must be free too.
func freePort(cluster bool) (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("redistest: find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !cluster {
			l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return port, nil
	}
	return 0, errors.New("redistest: no free port pair (port and port+10000) for a cluster node")
}

// start runs redis-server with s.args and waits until it logs that it is
// ready, the way redigo's tests do.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redistest: server %s is already running", s.Addr)
	}
	var offset int64
	if fi, err := os.Stat(s.logPath); err == nil {
		offset = fi.Size() // a restart appends to the same log
	}
	cmd := exec.Command("redis-server", s.args...)
	cmd.Dir = s.dir
	var out bytes.Buffer // startup errors before the log file is open
	cmd.Stdout = &out
	cmd.Stderr = &out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		if logHas(s.logPath, offset, "Ready to accept connections") {
			s.cmd, s.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redistest: redis-server on %s exited during start-up: %s%s", s.Addr, out.String(), logTail(s.logPath, offset))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("redistest: redis-server on %s not ready after %s: %s", s.Addr, startTimeout, logTail(s.logPath, offset))
		}
	}
}

func logHas(path string, offset int64, needle string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return bytes.Contains(b[offset:], []byte(needle))
}

func logTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	b = b[offset:]
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\n" + string(b)
}

// External reports whether s is a server named by EnvAddr or
// EnvClusterAddrs, which the helpers never stop.
func (s *Server) External() bool { return s.external }

// Stop stops the server (SIGTERM, then SIGKILL after a while) and waits
// for it to exit; the port stays reserved for Restart in the sense that
// Restart binds it again. It is an error for an external server.
func (s *Server) Stop() error {
	if s.external {
		return fmt.Errorf("redistest: refusing to stop %s, a server this test did not start (use StartOwn)", s.Addr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot act on SIGTERM
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
	return nil
}

// Pause stops the server process with SIGSTOP: it keeps its connections
// and accepts new ones (the kernel completes the handshake) but answers
// nothing, like a Redis that hangs on a slow disk or a stalled VM. Resume
// continues it. It is an error for an external server.
func (s *Server) Pause() error { return s.signal("pause", syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT); the commands it received
// meanwhile are then executed and answered.
func (s *Server) Resume() error { return s.signal("resume", syscall.SIGCONT) }

func (s *Server) signal(what string, sig syscall.Signal) error {
	if s.external {
		return fmt.Errorf("redistest: refusing to %s %s, a server this test did not start (use StartOwn)", what, s.Addr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return fmt.Errorf("redistest: cannot %s %s: it is not running", what, s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redistest: %s %s: %w", what, s.Addr, err)
	}
	return nil
}

// Restart starts a stopped server again on the same address, with an
// empty dataset unless it was started with persistence on (Stop lets it
// write its AOF or snapshot first). It is an error for an external
// server.
func (s *Server) Restart() error {
	if s.external {
		return fmt.Errorf("redistest: refusing to restart %s, a server this test did not start (use StartOwn)", s.Addr)
	}
	return s.start()
}

// Close stops the server and removes its directory. It does nothing for
// an external server.
func (s *Server) Close() error {
	if s.external {
		return nil
	}
	err := s.Stop()
	if s.ownsDir {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = fmt.Errorf("redistest: %w", rerr)
		}
	}
	return err
}

// Client returns a go-redis client for s, closed when tb ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// StartCluster returns a Redis Cluster for tb: the one named by
// EnvClusterAddrs if set, otherwise three new cluster-enabled redis-server
// masters joined with `redis-cli --cluster create` and stopped when tb
// ends. Without redis-server and redis-cli it skips tb (fails it under CI).
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if v := strings.TrimSpace(os.Getenv(EnvClusterAddrs)); v != "" {
		var addrs []string
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		return &Cluster{Addrs: addrs}
	}
	Require(tb, true)
	c, err := LaunchCluster()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// LaunchCluster starts three cluster-enabled redis-server masters on free
// ports, assigns all slots with `redis-cli --cluster create`, and waits
// until every node reports cluster_state:ok. The caller must Close it.
func LaunchCluster() (*Cluster, error) {
	if err := lookPath(true); err != nil {
		return nil, err
	}
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		s, err := launch(true)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.nodes = append(c.nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redistest: redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitOK(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitOK waits until every node sees all slots assigned and the cluster
// state ok, so that clients do not race the gossip that follows create.
func (c *Cluster) waitOK(ctx context.Context) error {
	for _, addr := range c.Addrs {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		var last string
		for {
			info, err := rdb.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = info
			}
			select {
			case <-ctx.Done():
				rdb.Close()
				return fmt.Errorf("redistest: cluster node %s not ok after %s: %s", addr, clusterTimeout, last)
			case <-time.After(20 * time.Millisecond):
			}
		}
		rdb.Close()
	}
	return nil
}

// Close stops every node and removes their directories.
func (c *Cluster) Close() error {
	var errs []error
	for _, s := range c.nodes {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Client returns a go-redis cluster client for c, closed when tb ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	tb.Cleanup(func() { cc.Close() })
	return cc
}
