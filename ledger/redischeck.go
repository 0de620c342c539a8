package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Redis fails quietly in three ways that a PING does not show, and
// RedisStore.Ready checks for each, on every master of a cluster:
//
//  1. An eviction policy. With maxmemory-policy allkeys-lru (or any policy
//     but noeviction) a full Redis deletes keys: an idempotency key gone
//     lets a credit pay out twice, an account or ledger key gone loses
//     money. Ready fails with *EvictionPolicyError, serve refuses to start,
//     and every other call fails closed while it lasts.
//  2. No persistence. Without AOF a restart forgets everything since the
//     last snapshot, or everything at all. DESIGN says warn: Ready logs a
//     warning once per node and stays ready (tests run Redis with
//     --save "" --appendonly no, and lose nothing by it).
//  3. Lost data. Redis came back empty or was flushed. A PING cannot tell
//     an empty Redis from a new one, so tollgate marks each Redis it uses:
//     marker keys holding a dataset id, written at the first check. A
//     check that finds them gone or replaced means the data is gone:
//     Ready fails with *DataLostError, every other call fails closed, the
//     store logs an error, and it stays so, on every replica, until an
//     operator runs AcceptDataLoss (tollgate accept-data-loss).
//
// On a cluster each master can lose its data alone, so there is one marker
// per 1024 slots (16 in all), each in its slots' range: every master that
// owns at least one such range holds a marker, and markers move with
// their slots when the cluster is resharded. A single Redis has one.
//
// Marker values are "<gen>:<id>" for a healthy dataset and
// "lost:<gen>:<id>" once a replica found it lost (the tombstone makes
// every replica, including ones started later, fail closed too). gen grows
// with every AcceptDataLoss, so a replica that trusted an older dataset
// takes a newer generation for an operator's decision, while a marker set
// anew by a replica that started on an emptied Redis (generation 1 again)
// reads as a loss.
//
// What this cannot see: a Redis that lost its data while no tollgate ran
// looks like a new one to the first replica that starts, which marks it
// afresh. Persistence, which the warning asks for, is the remedy.

// Key names and sizes of the checks.
const (
	markerKey    = "tollgate:marker"
	probeKey     = "tollgate:probe"
	clusterSlots = 16384
	markerChunks = 16 // markers on a cluster: one per clusterSlots/markerChunks slots
	probeTTL     = time.Minute
	tombstone    = "lost:"
)

// redisHealth is RedisStore's view of its Redis between checks.
type redisHealth struct {
	sem     chan struct{} // held by the one Ready or AcceptDataLoss running
	markers []string      // marker keys; on a cluster one per slot range
	probes  []string      // probe keys, in the markers' slots

	// Fields below are guarded by sem.
	trusted dataset        // the dataset this store verified; zero before
	lost    *DataLostError // sticky until an operator accepts the loss
	lostGen int64          // generation of the dataset that was lost
	unsafe  error          // the last check's *EvictionPolicyError
	warned  map[string]string
}

// dataset identifies the contents of a Redis tollgate marked.
type dataset struct {
	gen int64
	id  string
}

func (d dataset) String() string { return strconv.FormatInt(d.gen, 10) + ":" + d.id }

// gate is an error every RedisStore call returns while it is set.
type gate struct{ err error }

func newRedisHealth(cluster bool) redisHealth {
	h := redisHealth{sem: make(chan struct{}, 1), warned: map[string]string{}}
	if !cluster {
		h.markers, h.probes = []string{markerKey}, []string{probeKey}
		return h
	}
	for _, tag := range slotTags(markerChunks) {
		h.markers = append(h.markers, markerKey+":{"+tag+"}")
		h.probes = append(h.probes, probeKey+":{"+tag+"}")
	}
	return h
}

// slotTags returns n hash tags, the i-th hashing to a slot in the i-th of
// n equal ranges of the cluster's slots.
func slotTags(n int) []string {
	size := clusterSlots / n
	tags := make([]string, n)
	for i := range tags {
		for k := 0; ; k++ {
			tag := "m" + strconv.Itoa(k)
			if int(keySlot(tag))/size == i {
				tags[i] = tag
				break
			}
		}
	}
	return tags
}

// keySlot is the Redis Cluster slot of a key without braces: CRC16
// (XMODEM) of the key modulo 16384, as the cluster specification defines.
func keySlot(key string) uint16 {
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % clusterSlots
}

// parseMarker decodes a marker value.
func parseMarker(v string) (d dataset, lost, ok bool) {
	rest, lost := strings.CutPrefix(v, tombstone)
	genText, id, found := strings.Cut(rest, ":")
	gen, err := strconv.ParseInt(genText, 10, 64)
	if !found || err != nil || gen < 1 || id == "" {
		return dataset{}, false, false
	}
	return dataset{gen: gen, id: id}, lost, true
}

// guard returns the error calls fail with while Redis is unsafe or lost
// its data, or nil.
func (s *RedisStore) guard() error {
	if g := s.gate.Load(); g != nil {
		return g.err
	}
	return nil
}

// Ready implements Store. On every master it checks that Redis answers,
// that maxmemory-policy is noeviction and that persistence is on (a
// warning, logged once per node, when it is off; a warning too when Redis
// refuses CONFIG GET, as managed services may, and the policy cannot be
// checked). It then checks the marker keys (see above; the first check
// writes them) and, after a write failed, writes a probe key beside each
// marker. It keeps what it found: while Redis has lost its data or may
// evict keys, every other call fails closed with the same error.
func (s *RedisStore) Ready(ctx context.Context) error {
	select {
	case s.health.sem <- struct{}{}:
	case <-ctx.Done():
		return s.fail("ready", ctx.Err())
	}
	defer func() { <-s.health.sem }()
	err := s.ready(ctx)
	s.setGate()
	return err
}

func (s *RedisStore) ready(ctx context.Context) error {
	h := &s.health
	if err := s.checkNodes(ctx); err != nil {
		return err
	}
	if err := s.checkData(ctx); err != nil {
		return err
	}
	if h.unsafe != nil {
		return h.unsafe
	}
	f := s.writes.last()
	if f == nil {
		return nil
	}
	pipe := s.client.Pipeline()
	at := strconv.FormatInt(unixMilli(s.now()), 10)
	for _, k := range h.probes {
		pipe.Set(ctx, k, at, probeTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.wrote(err)
		return writeError(err)
	}
	s.writes.clear(f)
	return nil
}

// writeError says that writes to Redis fail, why, and what to do.
func writeError(err error) error {
	var advice string
	switch {
	case redis.HasErrorPrefix(err, "OOM"):
		advice = "Redis is out of memory and refuses writes: raise maxmemory (CONFIG SET maxmemory, and in redis.conf) or give Redis more memory; tollgate's keys must not be evicted, so deleting them is no remedy"
	case redis.HasErrorPrefix(err, "READONLY"):
		advice = "Redis is a read-only replica: point store.redis_url at the master, or at Sentinel or the Cluster, which find it"
	case redis.HasErrorPrefix(err, "MISCONF"):
		advice = "Redis refuses writes because it cannot save its snapshot: fix its disk or directory (see Redis's log)"
	default:
		advice = "check that Redis answers and accepts writes"
	}
	return fmt.Errorf("%w: writes fail (%v); %s", ErrStoreUnavailable, err, advice)
}

// setGate makes every call fail closed while Redis has lost its data or
// may evict keys, and lets them through again once neither holds.
func (s *RedisStore) setGate() {
	h := &s.health
	switch {
	case h.lost != nil:
		s.gate.Store(&gate{err: h.lost})
	case h.unsafe != nil:
		s.gate.Store(&gate{err: fmt.Errorf("%w: %w", ErrStoreUnavailable, h.unsafe)})
	default:
		s.gate.Store(nil)
	}
}

// nodeConfig is what CONFIG GET told about one node.
type nodeConfig struct {
	addr       string
	policy     string
	appendonly string
	save       string
	refused    error // CONFIG GET was refused: nothing is known
}

// checkNodes pings every master and reads its settings, recording an
// evicting policy in h.unsafe and logging each warning once.
func (s *RedisStore) checkNodes(ctx context.Context) error {
	var (
		mu    sync.Mutex
		nodes []nodeConfig
	)
	inspect := func(ctx context.Context, node redis.UniversalClient) error {
		nc, err := inspectNode(ctx, node)
		if err != nil {
			return &nodeFailure{s.fail("Redis "+nc.addr+" does not answer", err)}
		}
		mu.Lock()
		nodes = append(nodes, nc)
		mu.Unlock()
		return nil
	}
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return inspect(ctx, node) })
	} else {
		err = inspect(ctx, s.client)
	}
	var known *nodeFailure
	switch {
	case errors.As(err, &known):
		return known.err
	case err != nil:
		return s.fail("find the Redis Cluster's masters", err)
	}
	slices.SortFunc(nodes, func(a, b nodeConfig) int { return strings.Compare(a.addr, b.addr) })
	h := &s.health
	h.unsafe = nil
	for _, nc := range nodes {
		if nc.policy != "" && nc.policy != "noeviction" && h.unsafe == nil {
			h.unsafe = &EvictionPolicyError{Node: nc.addr, Policy: nc.policy}
		}
		s.warnOnce(nc.addr, nodeWarning(nc))
	}
	return nil
}

// nodeFailure is a node's error, already worded, through ForEachMaster.
type nodeFailure struct{ err error }

func (f *nodeFailure) Error() string { return f.err.Error() }

// inspectNode pings node and reads its eviction and persistence settings.
func inspectNode(ctx context.Context, node redis.UniversalClient) (nodeConfig, error) {
	nc := nodeConfig{addr: nodeAddr(node)}
	pipe := node.Pipeline()
	ping := pipe.Ping(ctx)
	policy := pipe.ConfigGet(ctx, "maxmemory-policy")
	aof := pipe.ConfigGet(ctx, "appendonly")
	save := pipe.ConfigGet(ctx, "save")
	_, _ = pipe.Exec(ctx) // each command carries its own error
	if err := ping.Err(); err != nil {
		return nc, err
	}
	for _, c := range []*redis.MapStringStringCmd{policy, aof, save} {
		var re redis.Error
		if err := c.Err(); err != nil {
			if !errors.As(err, &re) || unavailable(err) {
				return nc, err
			}
			nc.refused = err
			return nc, nil
		}
	}
	var found bool
	if nc.policy, found = policy.Val()["maxmemory-policy"]; !found {
		nc.refused = errors.New("maxmemory-policy not shown")
		return nc, nil
	}
	nc.appendonly, nc.save = aof.Val()["appendonly"], save.Val()["save"]
	return nc, nil
}

// nodeWarning is the warning a node's settings deserve, or "".
func nodeWarning(nc nodeConfig) string {
	switch {
	case nc.refused != nil:
		return fmt.Sprintf("Redis %s refuses CONFIG GET (%v), as managed services often do: tollgate cannot check that maxmemory-policy is noeviction "+
			"and that persistence is on; make sure your provider's settings say so (an evicting policy loses money)", nc.addr, nc.refused)
	case nc.appendonly == "yes":
		return ""
	case nc.save == "":
		return fmt.Sprintf("Redis %s has no persistence (appendonly no, save \"\"): a restart empties it, losing every balance, hold and idempotency key, "+
			"and tollgate then refuses to bill until an operator acts; turn on AOF (CONFIG SET appendonly yes, and appendonly yes with appendfsync everysec in redis.conf)", nc.addr)
	default:
		return fmt.Sprintf("Redis %s persists only by snapshots (save %q, appendonly no): a crash loses the charges and credits since the last snapshot; "+
			"turn on AOF (CONFIG SET appendonly yes, and appendonly yes with appendfsync everysec in redis.conf)", nc.addr, nc.save)
	}
}

// warnOnce logs msg for node unless it was the last thing logged for it.
func (s *RedisStore) warnOnce(node, msg string) {
	h := &s.health
	if h.warned[node] == msg {
		return
	}
	if msg == "" {
		delete(h.warned, node)
		return
	}
	h.warned[node] = msg
	s.log.Warn(msg, zap.String("redis", node))
}

// nodeAddr is the address of a node's client, for messages.
func nodeAddr(c redis.UniversalClient) string {
	if rc, ok := c.(*redis.Client); ok {
		return rc.Options().Addr
	}
	return "(unknown address)"
}

// checkData reads the markers and decides whether Redis still holds the
// data this store (or the replica that marked it) trusted; see the top of
// this file.
func (s *RedisStore) checkData(ctx context.Context) error {
	h := &s.health
	vals, err := s.readMarkers(ctx)
	if err != nil {
		return err
	}
	var (
		healthy          []dataset
		missing, garbled []int
		tomb             *dataset
		maxGen           int64
	)
	for i, v := range vals {
		if v == "" {
			missing = append(missing, i)
			continue
		}
		d, lost, ok := parseMarker(v)
		switch {
		case !ok:
			garbled = append(garbled, i)
			continue
		case lost:
			tomb = &d
		default:
			healthy = append(healthy, d)
		}
		maxGen = max(maxGen, d.gen)
	}
	same := len(healthy) > 0 && !slices.ContainsFunc(healthy, func(d dataset) bool { return d != healthy[0] })
	whole := same && len(healthy) == len(vals)

	if h.lost != nil {
		if whole && healthy[0].gen > h.lostGen {
			h.trusted, h.lost = healthy[0], nil
			s.log.Warn("an operator accepted the loss of Redis's data; serving what Redis holds now", zap.String("dataset", h.trusted.String()))
			return nil
		}
		return h.lost
	}
	if tomb != nil {
		return s.lose(ctx, tomb.gen, "another tollgate found it lost, and no operator has accepted that yet", false)
	}
	if len(garbled) > 0 || (len(healthy) > 0 && !same) {
		return s.lose(ctx, max(maxGen, h.trusted.gen), fmt.Sprintf("its marker keys disagree: %s", s.describe(vals)), true)
	}
	if h.trusted.gen == 0 {
		switch {
		case len(healthy) == 0:
			d, err := s.markNew(ctx)
			if err != nil {
				return err
			}
			h.trusted = d
			s.log.Info("marked Redis as tollgate's (marker keys "+markerKey+"*), to notice if it ever loses its data", zap.String("dataset", d.String()))
		case len(missing) > 0:
			// Another replica may be marking a new Redis right now; or a
			// cluster master lost its data while no tollgate watched,
			// which nothing can tell apart any more.
			if err := s.setMarkers(ctx, healthy[0], missing, true); err != nil {
				return err
			}
			h.trusted = healthy[0]
			s.log.Warn("some of Redis's tollgate marker keys were missing and were written again: if a Redis Cluster master lost its data while no tollgate was running, "+
				"the balances in its slots are gone", zap.String("missing", s.describe(vals)))
		default:
			h.trusted = healthy[0]
		}
		return nil
	}
	switch {
	case len(missing) > 0:
		return s.lose(ctx, h.trusted.gen, fmt.Sprintf("%d of its %d marker keys are gone: %s", len(missing), len(vals), s.describe(vals)), true)
	case healthy[0] == h.trusted:
		return nil
	case healthy[0].gen > h.trusted.gen:
		h.trusted = healthy[0]
		s.log.Warn("an operator accepted the loss of Redis's data; serving what Redis holds now", zap.String("dataset", h.trusted.String()))
		return nil
	default:
		return s.lose(ctx, h.trusted.gen, fmt.Sprintf("its marker keys were written anew (dataset %s, where tollgate had marked %s)", healthy[0], h.trusted), true)
	}
}

// describe lists which markers are missing, for messages.
func (s *RedisStore) describe(vals []string) string {
	if len(vals) == 1 {
		if vals[0] == "" {
			return markerKey + " is missing"
		}
		return markerKey + " holds " + strconv.Quote(vals[0])
	}
	size := clusterSlots / len(vals)
	var parts []string
	for i, v := range vals {
		if v == "" {
			v = "missing"
		}
		parts = append(parts, fmt.Sprintf("slots %d-%d %s", i*size, (i+1)*size-1, v))
	}
	return strings.Join(parts, ", ")
}

// lose records that Redis lost its data, logs it, and with tell writes a
// tombstone so that every other replica finds out too.
func (s *RedisStore) lose(ctx context.Context, gen int64, detail string, tell bool) error {
	h := &s.health
	h.lost, h.lostGen = &DataLostError{Detail: detail}, gen
	s.log.Error(h.lost.Error())
	if tell {
		d := h.trusted
		if d.gen == 0 {
			d = dataset{gen: gen, id: "unknown"}
		}
		if err := s.client.Set(ctx, h.markers[0], tombstone+d.String(), 0).Err(); err != nil {
			s.log.Warn("could not mark Redis's data as lost for the other replicas; each finds out on its own check", zap.Error(err))
		}
	}
	return h.lost
}

// readMarkers returns the marker values, "" for a missing one.
func (s *RedisStore) readMarkers(ctx context.Context) ([]string, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(s.health.markers))
	for i, k := range s.health.markers {
		cmds[i] = pipe.Get(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	vals := make([]string, len(cmds))
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, s.fail("ready: read the marker keys", err)
		default:
			vals[i] = v
		}
	}
	return vals, nil
}

// markNew marks a Redis that has no markers: the first marker decides
// the dataset (another replica may be marking it at the same moment), the
// others follow it.
func (s *RedisStore) markNew(ctx context.Context) (dataset, error) {
	h := &s.health
	fresh := dataset{gen: 1, id: newToken()}
	if err := s.client.SetNX(ctx, h.markers[0], fresh.String(), 0).Err(); err != nil {
		s.wrote(err)
		return dataset{}, s.markError(err)
	}
	v, err := s.client.Get(ctx, h.markers[0]).Result()
	if err != nil {
		return dataset{}, s.fail("ready: read the marker keys", err)
	}
	d, lost, ok := parseMarker(v)
	if !ok || lost {
		return dataset{}, fmt.Errorf("ready: %w: marker %s holds %q", errCorrupt, h.markers[0], v)
	}
	rest := make([]int, 0, len(h.markers)-1)
	for i := 1; i < len(h.markers); i++ {
		rest = append(rest, i)
	}
	return d, s.setMarkers(ctx, d, rest, true)
}

// setMarkers writes d into the markers at idx; with onlyNew, only where
// none is set.
func (s *RedisStore) setMarkers(ctx context.Context, d dataset, idx []int, onlyNew bool) error {
	if len(idx) == 0 {
		return nil
	}
	pipe := s.client.Pipeline()
	for _, i := range idx {
		if onlyNew {
			pipe.SetNX(ctx, s.health.markers[i], d.String(), 0)
		} else {
			pipe.Set(ctx, s.health.markers[i], d.String(), 0)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.wrote(err)
		return s.markError(err)
	}
	return nil
}

func (s *RedisStore) markError(err error) error {
	if unavailable(err) && s.writes.last() != nil {
		return writeError(err)
	}
	return s.fail("ready: write the marker keys", err)
}

// AcceptDataLoss is the operator's answer to a *DataLostError: Redis's
// present contents become the dataset tollgate serves. It writes new
// marker keys of a newer generation, which every replica takes for the
// operator's decision on its next check, and lets this store serve again
// at once. Restore Redis from a backup first if there is one. It is
// harmless on a Redis that lost nothing (the markers are renewed).
func (s *RedisStore) AcceptDataLoss(ctx context.Context) error {
	select {
	case s.health.sem <- struct{}{}:
	case <-ctx.Done():
		return s.fail("accept data loss", ctx.Err())
	}
	defer func() { <-s.health.sem }()
	h := &s.health
	vals, err := s.readMarkers(ctx)
	if err != nil {
		return err
	}
	gen := max(h.trusted.gen, h.lostGen)
	for _, v := range vals {
		if d, _, ok := parseMarker(v); ok {
			gen = max(gen, d.gen)
		}
	}
	d := dataset{gen: gen + 1, id: newToken()}
	all := make([]int, len(h.markers))
	for i := range all {
		all[i] = i
	}
	if err := s.setMarkers(ctx, d, all, false); err != nil {
		return err
	}
	h.trusted, h.lost, h.lostGen = d, nil, 0
	s.setGate()
	s.log.Warn("data loss accepted: serving what Redis holds now; the other replicas follow on their next check", zap.String("dataset", d.String()))
	return nil
}
