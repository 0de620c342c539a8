package proxy

import (
	"runtime"
	"sync/atomic"
	"time"
)

// settlers runs settlements and releases on a few long-lived goroutines
// rather than a new one each: a worker's stack has already grown to what
// a Settle needs, and one that just finished takes the next job at once.
// A job never waits for a worker: when every worker is busy (a slow or
// failing store, whose settlements retry with backoff for up to a
// minute), it runs on a goroutine of its own, as before. Workers exit
// after settlerIdle without work, so an idle Server keeps none.
type settlers struct {
	jobs chan func() // unbuffered: a send succeeds only into an idle worker
	n    atomic.Int32
	max  int32
}

// settlerIdle is how long a worker waits for its next job before it
// exits.
const settlerIdle = 10 * time.Second

func newSettlers() *settlers {
	return &settlers{jobs: make(chan func()), max: int32(4 * runtime.GOMAXPROCS(0))}
}

// run runs job on an idle worker, a new worker, or (all max busy) a
// goroutine of its own, and returns at once.
func (p *settlers) run(job func()) {
	select {
	case p.jobs <- job:
		return
	default:
	}
	if p.n.Add(1) <= p.max {
		go p.work(job)
		return
	}
	p.n.Add(-1)
	go job()
}

func (p *settlers) work(job func()) {
	defer p.n.Add(-1)
	idle := time.NewTimer(settlerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(settlerIdle)
		select {
		case job = <-p.jobs:
		case <-idle.C:
			return
		}
	}
}
