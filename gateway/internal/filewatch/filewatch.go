// Package filewatch keeps a value read from a small file and reads the file
// again, at most once per interval, when the value is asked for: the API key
// of the gateway client and the key list of the gateway simulator rotate
// without a restart. Reading on use needs no goroutine, follows whatever the
// path names now (a Kubernetes secret volume swaps a symlink atomically),
// and notices an edit that keeps the modification time.
package filewatch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// DefaultInterval is the default of Config.Interval.
const DefaultInterval = time.Second

// MaxBytes is the largest file read; a longer one is an error.
const MaxBytes = 64 << 10

// Config configures a File.
type Config struct {
	// Path is the file's path. Required.
	Path string
	// What names the file's contents in log lines and errors, e.g.
	// "gateway API key file". Default "file".
	What string
	// Interval is the least time between two reads. Default
	// DefaultInterval (1s).
	Interval time.Duration
	// Logger receives a warning when a changed file cannot be used (once
	// until it can again) and an info line when a new value is taken. The
	// lines name the path, never the contents.
	Logger zerolog.Logger
	// NowFunc returns the time; default time.Now. Tests inject a clock.
	NowFunc func() time.Time
}

// File is the value parsed from a file, read again when it is asked for and
// Interval has passed since the last read. A read that fails, or whose
// contents do not parse, keeps the previous value. It is safe for
// concurrent use; callers that find a read in progress take the current
// value without waiting.
type File[T any] struct {
	cfg   Config
	parse func([]byte) (T, error)
	equal func(a, b T) bool

	cur  atomic.Pointer[T]
	next atomic.Int64 // UnixNano of the earliest next read

	mu     sync.Mutex // one read at a time; guards broken
	broken bool       // the last read failed (warned once)
}

// Open reads the file at cfg.Path and parses it with parse, whose errors
// must not quote the contents. It fails when the file cannot be read or
// parsed. equal tells a new value from the current one (for the log line).
func Open[T any](cfg Config, parse func([]byte) (T, error), equal func(a, b T) bool) (*File[T], error) {
	if cfg.Path == "" {
		return nil, errors.New("filewatch: no path")
	}
	if cfg.What == "" {
		cfg.What = "file"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	f := &File[T]{cfg: cfg, parse: parse, equal: equal}
	v, err := f.read()
	if err != nil {
		return nil, err
	}
	f.cur.Store(&v)
	f.next.Store(cfg.NowFunc().Add(cfg.Interval).UnixNano())
	return f, nil
}

// Get returns the current value, having read the file again first when the
// interval has passed and no other caller is reading it.
func (f *File[T]) Get() T {
	if now := f.cfg.NowFunc(); now.UnixNano() >= f.next.Load() && f.mu.TryLock() {
		f.refresh(now)
		f.mu.Unlock()
	}
	return *f.cur.Load()
}

// refresh reads the file again; f.mu is held.
func (f *File[T]) refresh(now time.Time) {
	f.next.Store(now.Add(f.cfg.Interval).UnixNano())
	v, err := f.read()
	if err != nil {
		if !f.broken {
			f.broken = true
			f.cfg.Logger.Warn().Err(err).Str("path", f.cfg.Path).
				Msg(f.cfg.What + " cannot be used: keeping the previous one")
		}
		return
	}
	if f.broken {
		f.broken = false
		f.cfg.Logger.Info().Str("path", f.cfg.Path).Msg(f.cfg.What + " readable again")
	}
	if !f.equal(*f.cur.Load(), v) {
		f.cur.Store(&v)
		f.cfg.Logger.Info().Str("path", f.cfg.Path).Msg(f.cfg.What + " changed: new contents in use")
	}
}

// read reads and parses the file. Errors name the path, never the contents.
func (f *File[T]) read() (T, error) {
	var zero T
	fh, err := os.Open(f.cfg.Path)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", f.cfg.What, err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxBytes+1))
	if err != nil {
		return zero, fmt.Errorf("%s: read %s: %w", f.cfg.What, f.cfg.Path, err)
	}
	if len(data) > MaxBytes {
		return zero, fmt.Errorf("%s %s: larger than %d bytes", f.cfg.What, f.cfg.Path, MaxBytes)
	}
	v, err := f.parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", f.cfg.What, f.cfg.Path, err)
	}
	return v, nil
}
