package ledger

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends the script calls of concurrent callers to Redis together,
// as one pipeline, without making any caller wait for company: a call that
// finds fewer than maxInFlight pipelines running is sent at once, by its
// own goroutine (alone, when nothing else is queued, exactly like a plain
// Script.Run); calls that arrive while that many are running queue up, and
// whatever has queued goes out as the next pipeline as soon as one
// finishes. Under load this is group commit: one write and one read
// system call on each side for a whole batch instead of one per call,
// which on a small machine is most of what a script costs. At low load
// every call goes alone and nothing changes.
//
// Each caller gets its own script's reply or error; a failed pipeline
// fails every call in it, each with the pipeline's error. A Redis Cluster
// client splits a pipeline by node and sends each part to its node, and
// follows MOVED and ASK redirects per command, so a batch may mix
// customers of any slots. Scripts are sent with EVALSHA; a call that
// finds its script missing (NOSCRIPT: Redis restarted or failed over) is
// sent again with EVAL, which is safe because NOSCRIPT means the script
// did not run.
//
// A caller whose context ends while its call is still queued takes the
// call back (it is never sent) and gets the context's error at once, which
// the store reports as ErrStoreUnavailable. One whose call is already on
// the wire gets the context's error at once too, but the script may still
// run: like a lost reply, the outcome is unknown, which every Store caller
// must already handle (every operation is idempotent or recognises its own
// retry; a settlement that timed out is retried and finds its first
// charge).
//
// A pipeline is sent with the latest deadline of the callers in it, so
// that one stuck on a hung connection or server gives up its slot when the
// last of them has stopped waiting, and the calls queued behind it go out
// on another connection instead of waiting for the client's read timeout.
// (That needs a client with ContextTimeoutEnabled; see NewRedisStore.)
type batcher struct {
	client      redis.UniversalClient
	maxInFlight int

	mu       sync.Mutex
	queue    []*scriptCall
	inFlight int // pipelines being sent
}

// scriptCall is one script call waiting for its reply.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	argv   []any // the EVALSHA command (evalShaArgs)

	val  any
	err  error
	done chan struct{} // closed when val and err are set
}

// defaultMaxInFlight is how many pipelines a store sends at once. Two keep
// one batch on the wire while the next one fills, so that a caller waits
// at most about one round trip for its turn.
const defaultMaxInFlight = 2

func newBatcher(client redis.UniversalClient, maxInFlight int) *batcher {
	if maxInFlight < 1 {
		maxInFlight = 1
	}
	return &batcher{client: client, maxInFlight: maxInFlight}
}

// run runs script on keys with args and returns its reply.
func (b *batcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	argv := evalShaArgs(script, keys, args)
	b.mu.Lock()
	if b.inFlight < b.maxInFlight {
		// A slot is free, so nobody is queued (finished hands the queue
		// on before it frees a slot): send the call now, on this
		// goroutine, as a plain command.
		b.inFlight++
		b.mu.Unlock()
		cmd := evalSha(ctx, b.client, argv)
		if noScript(cmd) {
			cmd = script.Eval(ctx, b.client, keys, scriptArgs(keys, argv)...)
		}
		b.finished()
		return cmd.Result()
	}
	c := &scriptCall{ctx: ctx, script: script, keys: keys, argv: argv, done: make(chan struct{})}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		b.mu.Lock()
		queued := false
		for i, q := range b.queue {
			if q == c {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				queued = true
				break
			}
		}
		b.mu.Unlock()
		if !queued {
			// Already sent: prefer its reply if it has just come.
			select {
			case <-c.done:
				return c.val, c.err
			default:
			}
		}
		return nil, ctx.Err()
	}
}

// take empties the queue and returns what it held. b.mu must be held.
func (b *batcher) take() []*scriptCall {
	batch := b.queue
	b.queue = nil
	return batch
}

// finished ends one pipeline slot: if calls queued meanwhile, they go out
// at once on a new goroutine that keeps the slot until the queue is empty;
// otherwise the slot is released.
func (b *batcher) finished() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inFlight--
		b.mu.Unlock()
		return
	}
	batch := b.take()
	b.mu.Unlock()
	go func() {
		for len(batch) > 0 {
			b.send(batch)
			b.mu.Lock()
			batch = b.take()
			if len(batch) == 0 {
				b.inFlight--
			}
			b.mu.Unlock()
		}
	}()
}

// send sends batch as one pipeline and hands every call its reply.
func (b *batcher) send(batch []*scriptCall) {
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.finish(nil, err)
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	// The pipeline belongs to no single caller, so no caller's
	// cancellation may cut it short: it ends when the last of them stops
	// waiting, or, if one waits without a deadline, at the client's read
	// and write timeouts.
	ctx := context.Background()
	if d, ok := latestDeadline(live); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	cmds := make([]*redis.Cmd, len(live))
	pipe := b.client.Pipeline()
	for i, c := range live {
		cmds[i] = evalSha(ctx, pipe, c.argv)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	var missing []int
	for i, cmd := range cmds {
		if noScript(cmd) {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		pipe = b.client.Pipeline()
		for _, i := range missing {
			c := live[i]
			cmds[i] = c.script.Eval(ctx, pipe, c.keys, scriptArgs(c.keys, c.argv)...)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
	}
	for i, c := range live {
		c.finish(cmds[i].Result())
	}
}

// latestDeadline returns the latest deadline of the calls, and false if
// any of them has none.
func latestDeadline(calls []*scriptCall) (time.Time, bool) {
	var latest time.Time
	for _, c := range calls {
		d, ok := c.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest, true
}

func (c *scriptCall) finish(val any, err error) {
	c.val, c.err = val, err
	close(c.done)
}

// evalShaArgs returns the EVALSHA command of script on keys with args: what
// Script.EvalSha builds, in one allocation instead of one per key. The
// keys go in as pointers into keys, which go-redis writes (and hashes to
// a cluster slot) as the strings themselves: a string in an interface
// costs an allocation, a pointer does not. keys must not change until the
// call is done.
func evalShaArgs(script *redis.Script, keys []string, args []any) []any {
	argv := make([]any, 3+len(keys)+len(args))
	argv[0] = "evalsha"
	argv[1] = script.Hash()
	argv[2] = len(keys)
	for i := range keys {
		argv[3+i] = &keys[i]
	}
	copy(argv[3+len(keys):], args)
	return argv
}

// scriptArgs returns the script arguments (ARGV) of argv, built by
// evalShaArgs for keys.
func scriptArgs(keys []string, argv []any) []any { return argv[3+len(keys):] }

// processor is what evalSha sends on: a client, or a pipeline (which only
// queues the command).
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// evalSha sends argv, built by evalShaArgs, on c.
func evalSha(ctx context.Context, c processor, argv []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, argv...)
	if argv[2] != 0 {
		cmd.SetFirstKeyPos(3) // as Script.EvalSha: a cluster routes by the first key
	}
	_ = c.Process(ctx, cmd) // the command carries its error
	return cmd
}

// noScript reports whether cmd failed because Redis does not have its
// script (restarted, failed over, or flushed): it did not run, and is sent
// again with EVAL. (HasErrorPrefix allocates even for a nil error.)
func noScript(cmd *redis.Cmd) bool {
	err := cmd.Err()
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}
