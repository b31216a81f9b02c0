package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressKind is how progress is shown.
type progressKind int

const (
	progressNone  progressKind = iota // --quiet: errors only
	progressBar                       // a progress bar, on a terminal
	progressLines                     // a plain line every interval, for logs
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) //nolint:gosec // file descriptors fit in an int
}

// progress shows how a run goes on one writer, and serialises every write to
// it (error lines come from publish goroutines). In progressLines mode it
// owns one goroutine, which stop ends and waits for.
type progress struct {
	w     io.Writer
	kind  progressKind
	total int64 // -1 when unknown
	c     *counters
	start time.Time

	completed atomic.Int64

	mu  sync.Mutex // guards writes to w and bar
	bar *progressbar.ProgressBar

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func newProgress(w io.Writer, kind progressKind, total int64, interval time.Duration, c *counters) *progress {
	p := &progress{w: w, kind: kind, total: total, c: c, start: time.Now(), stopCh: make(chan struct{})}
	switch kind {
	case progressBar:
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("publishing"),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("msg"),
			progressbar.OptionThrottle(100*time.Millisecond),
			// No spinner goroutine for an unknown total: redraws
			// happen on progress only.
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
		_ = p.bar.RenderBlank()
	case progressLines:
		p.wg.Add(1)
		go p.tick(interval)
	}
	return p
}

// tick prints a progress line every interval until stop.
func (p *progress) tick(interval time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stopCh:
			return
		case <-t.C:
			p.printf("%s", p.line())
		}
	}
}

// line describes the progress so far.
func (p *progress) line() string {
	done := p.completed.Load()
	of := ""
	if p.total >= 0 {
		of = fmt.Sprintf("/%d", p.total)
	}
	rate := 0.0
	if el := time.Since(p.start).Seconds(); el > 0 {
		rate = float64(done) / el
	}
	return fmt.Sprintf("progress: %d%s done (published %d, rejected as duplicate %d, failed %d), %.0f msg/s",
		done, of, p.c.published.Load(), p.c.dupRejected.Load(), p.c.failed.Load(), rate)
}

// add counts one message done (acknowledged or failed).
func (p *progress) add() {
	p.completed.Add(1)
	if p.bar != nil {
		p.mu.Lock()
		_ = p.bar.Add(1)
		p.mu.Unlock()
	}
}

// printf writes one line, keeping the bar below it.
func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.bar != nil {
		_ = p.bar.RenderBlank()
	}
}

// stop ends the progress display; complete fills the bar. It waits for the
// line goroutine and is idempotent.
func (p *progress) stop(complete bool) {
	p.stopOnce.Do(func() {
		close(p.stopCh)
		p.wg.Wait()
		switch p.kind {
		case progressBar:
			p.mu.Lock()
			if complete && p.total >= 0 {
				_ = p.bar.Finish()
			} else {
				_ = p.bar.RenderBlank()
			}
			fmt.Fprintln(p.w)
			p.mu.Unlock()
		case progressLines:
			p.printf("%s", p.line())
		}
	})
}
