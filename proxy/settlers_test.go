package proxy

import (
	"sync"
	"testing"
)

// TestSettlersNeverWait: with every worker busy (settlements stuck on a
// hung store), handing over more jobs neither blocks the handler nor
// queues them behind the stuck ones: each starts at once, and no more
// than max workers are kept.
func TestSettlersNeverWait(t *testing.T) {
	p := &settlers{jobs: make(chan func()), max: 2}
	release := make(chan struct{})
	var started, done sync.WaitGroup
	const jobs = 10
	started.Add(jobs)
	done.Add(jobs)
	for range jobs {
		p.run(func() {
			defer done.Done()
			started.Done()
			<-release
		})
	}
	started.Wait() // hangs (and the test times out) if a job waits for a worker
	if n := p.n.Load(); n != 2 {
		t.Errorf("%d workers with %d jobs running; want max, 2", n, jobs)
	}
	close(release)
	done.Wait()
	// The workers take the next jobs.
	var again sync.WaitGroup
	again.Add(jobs)
	for range jobs {
		p.run(again.Done)
	}
	again.Wait()
	if n := p.n.Load(); n > 2 {
		t.Errorf("%d workers; want at most 2", n)
	}
}

// BenchmarkSettlers hands over short jobs as a busy proxy hands over
// settlements, to the workers and, for comparison, to a goroutine each.
func BenchmarkSettlers(b *testing.B) {
	job := func(wg *sync.WaitGroup) func() {
		return func() {
			var buf [4 << 10]byte // a Settle's stack, roughly
			buf[len(buf)-1] = 1
			_ = buf
			wg.Done()
		}
	}
	b.Run("workers", func(b *testing.B) {
		p := newSettlers()
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			p.run(job(&wg))
		}
		wg.Wait()
	})
	b.Run("goroutines", func(b *testing.B) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			go job(&wg)()
		}
		wg.Wait()
	})
}
