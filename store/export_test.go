package store

// SweeperLockID exposes the sweeper's advisory lock id to the tests.
const SweeperLockID = sweeperLockID

// ClaimsReceived reports how many claims the batcher's collector has taken
// from callers so far.
func (b *Batcher) ClaimsReceived() int64 { return b.claims.received.Load() }
