package pgtest_test

import "time"

const (
	time5s = 5 * time.Second
	tick   = 10 * time.Millisecond
)
