package processing

import (
	"context"
	"fmt"
	"time"
)

// Slots of a guard: with several gateways the consumer's Admit bounds the
// messages in flight by the sum of the gateways' limits, and each call
// takes one of its gateway's slots (acquire), so that no gateway has more
// calls in flight than its concurrency limit, fixed or adaptive. A call
// whose gateway is at its limit waits here, its lease kept alive by the
// charge's keeper. With one gateway Admit bounds the messages, and so the
// calls, and no slot is taken.

// acquire waits until a call to the gateway stays within its concurrency
// limit (-1: none) and counts it in; the returned func counts it out. It
// returns ctx's error if ctx ends first.
func (g *Guard) acquire(ctx context.Context) (func(), error) {
	for {
		freed := *g.slotFreed.Load()
		n, lim := g.slots.Load(), g.limit.Load()
		if lim < 0 || n < lim {
			if !g.slots.CompareAndSwap(n, n+1) {
				continue
			}
			return g.releaseSlot, nil
		}
		// A call that waits for a slot wakes when one is freed or the
		// limit changes; the poll covers a limit that is lowered and then
		// raised again without a release between.
		t := time.NewTimer(halfOpenPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-freed:
		case <-t.C:
		}
		t.Stop()
	}
}

// releaseSlot gives a slot back and wakes the calls waiting for one.
func (g *Guard) releaseSlot() {
	g.slots.Add(-1)
	g.wakeSlots()
}

// wakeSlots wakes the calls waiting for a slot.
func (g *Guard) wakeSlots() {
	next := make(chan struct{})
	close(*g.slotFreed.Swap(&next))
}

// Slots returns the calls holding one of the guard's slots now (several
// gateways only; 0 with one).
func (g *Guard) Slots() int { return int(g.slots.Load()) }

// slot takes one of g's slots for a call when the processor has several
// gateways (with one, Admit already bounds the calls); the returned func
// gives it back.
func (p *Processor) slot(ctx context.Context, g *routed) (func(), error) {
	if len(p.gws) == 1 {
		return func() {}, nil
	}
	release, err := g.guard.acquire(ctx)
	if err != nil {
		return nil, p.stopped(ctx, fmt.Errorf("gateway %s concurrency slot: %w", g.name, err))
	}
	return release, nil
}

// admitSum is Admit with several gateways, none of which would refuse a
// call outright: the sum of what each gateway's guard admits given its
// slots in use, -1 when any has no limit. A gateway that is probing adds
// its one probe; an open one adds nothing. The pull then keeps about as
// many messages in flight as the gateways take calls, and the slots hold
// each gateway to its own limit.
func (p *Processor) admitSum() (int, time.Duration) {
	sum := 0
	var wait time.Duration
	for _, r := range p.gws {
		lim, w := r.guard.Admit(r.guard.Slots())
		if lim < 0 {
			return -1, 0
		}
		sum += lim
		if lim == 0 && (wait == 0 || w < wait) {
			wait = w
		}
	}
	if sum > 0 {
		return sum, 0
	}
	return 0, wait
}
