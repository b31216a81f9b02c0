package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	psfleet "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/ops"
)

// TestStatusTableSilentWorker: the READY column says a silent worker is
// silent, with what it said last, rather than repeat its stale "yes".
func TestStatusTableSilentWorker(t *testing.T) {
	t.Parallel()
	r := ops.StatusReport{
		Time: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC),
		Workers: []psfleet.Heartbeat{
			{WorkerID: "w1", Ready: true, Breaker: "closed"},
			{WorkerID: "w2", Ready: true, Breaker: "closed"},
		},
		Silent: map[string]float64{"w2": 25.4},
	}
	var b bytes.Buffer
	statusTable(&b, r)
	assert.Regexp(t, `(?m)^w1\tyes\t`, b.String())
	assert.Regexp(t, `(?m)^w2\tsilent for 25s \(last said yes\)\t`, b.String())
}
