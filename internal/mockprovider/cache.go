package mockprovider

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// This file holds the mock's prompt cache: which prompt prefixes earlier
// requests left cached, so that a later request reports cache reads (and,
// on Anthropic, writes) as the provider would.

// maxCacheEntries bounds the cache's memory (about 100 bytes an entry).
// When it is full, expired entries are dropped, and if none has expired
// the whole cache is forgotten: a mock may lose its cache, as a provider's
// may be evicted early.
const maxCacheEntries = 100_000

type cacheKey [sha256.Size]byte

// promptCache maps prefix digests to the time they expire.
type promptCache struct {
	mu      sync.Mutex
	max     int
	expires map[cacheKey]time.Time
}

func newPromptCache(max int) *promptCache {
	return &promptCache{max: max, expires: make(map[cacheKey]time.Time)}
}

// hit reports whether k is cached at now, and if so keeps it for ttl more.
func (c *promptCache) hit(k cacheKey, now time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.expires[k]
	if !ok || !now.Before(exp) {
		return false
	}
	c.expires[k] = later(exp, now.Add(ttl))
	return true
}

// put caches k until now + ttl (or later, if it already is).
func (c *promptCache) put(k cacheKey, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.expires[k]; !ok && len(c.expires) >= c.max {
		for key, exp := range c.expires {
			if !now.Before(exp) {
				delete(c.expires, key)
			}
		}
		if len(c.expires) >= c.max {
			clear(c.expires)
		}
	}
	c.expires[k] = later(c.expires[k], now.Add(ttl))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// prefixes returns, for each block of p, the digest of the prompt up to and
// including it (scoped to the API and model, as providers scope their
// caches) and the tokens of that prefix.
func prefixes(scope string, p prompt) ([]cacheKey, []int64) {
	h := sha256.New()
	var n [8]byte
	write := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	write(scope)
	keys := make([]cacheKey, len(p.blocks))
	cum := make([]int64, len(p.blocks))
	var total int64
	for i, b := range p.blocks {
		write(b.raw)
		h.Sum(keys[i][:0])
		total += b.tokens
		cum[i] = total
	}
	return keys, cum
}

// openAICached returns the cached input tokens OpenAI would report for p
// (its automatic prompt caching): the longest prefix of CacheMinTokens or
// more that an earlier request cached, in steps of CacheIncrement; and
// caches p's own prefixes.
func (x *exchange) openAICached(p prompt) int64 {
	keys, cum := prefixes(string(x.req.API)+"\x00"+x.req.Model, p)
	now := x.p.now()
	var cached int64
	for i := len(keys) - 1; i >= 0; i-- {
		if cum[i] >= CacheMinTokens && x.p.cache.hit(keys[i], now, CacheTTL) {
			cached = cum[i] / CacheIncrement * CacheIncrement
			break
		}
	}
	for i := range keys {
		if cum[i] >= CacheMinTokens {
			x.p.cache.put(keys[i], now, CacheTTL)
		}
	}
	return cached
}

// anthropicCache returns the cache reads and writes Anthropic would report
// for p: prefixes end at blocks marked cache_control and count from
// CacheMinTokens; the longest one cached earlier is read, the part of the
// prompt from there to the last marked block is written (write5m, or
// write1h for the segments whose marker asks for "ttl": "1h"), and every
// marked prefix is cached from now on.
func (x *exchange) anthropicCache(p prompt) (read, write5m, write1h int64) {
	keys, cum := prefixes(string(x.req.API)+"\x00"+x.req.Model, p)
	now := x.p.now()
	var marked []int
	for i, b := range p.blocks {
		if b.marked && cum[i] >= CacheMinTokens {
			marked = append(marked, i)
		}
	}
	ttl := func(i int) time.Duration {
		if p.blocks[i].hour {
			return time.Hour
		}
		return CacheTTL
	}
	hit := -1
	for j := len(marked) - 1; j >= 0; j-- {
		if i := marked[j]; x.p.cache.hit(keys[i], now, ttl(i)) {
			hit = i
			break
		}
	}
	if hit >= 0 {
		read = cum[hit]
	}
	prev := read
	for _, i := range marked {
		if i > hit {
			if p.blocks[i].hour {
				write1h += cum[i] - prev
			} else {
				write5m += cum[i] - prev
			}
			prev = cum[i]
		}
		x.p.cache.put(keys[i], now, ttl(i))
	}
	return read, write5m, write1h
}
