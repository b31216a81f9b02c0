package localstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rssInterval is how often a Process samples its peak resident set size.
const rssInterval = 200 * time.Millisecond

// Process is one child process started by a Stack: in its own process
// group, with its standard output and error appended to a log file, and
// killed (SIGKILL) by the kernel if the process that started it dies. The
// Stack owns it and reaps it; its methods are safe for concurrent use.
type Process struct {
	name     string
	logPath  string
	httpAddr string
	cmd      *exec.Cmd

	done     chan struct{} // closed once the process was reaped
	exitCode int           // valid after done
	waitErr  error         // valid after done

	sampled chan struct{} // closed when the RSS sampler ended
	peakKB  atomic.Int64  // largest VmHWM seen, in KiB; -1 before the first sample
}

// startProcess starts cmd and the goroutines that reap it and sample its
// memory; both end when the process ends. The thread that starts the
// process stays locked until it ends, since the parent-death signal is
// tied to that thread, not to our process.
func startProcess(name, logPath, httpAddr string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localstack: open log of %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	p := &Process{
		name: name, logPath: logPath, httpAddr: httpAddr, cmd: cmd,
		done: make(chan struct{}), sampled: make(chan struct{}),
	}
	p.peakKB.Store(-1)
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			logFile.Close()
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		logFile.Close()
		p.exitCode, p.waitErr = exitCode(cmd, err)
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("localstack: start %s: %w", name, err)
	}
	p.sampleRSS()
	go p.sampleLoop()
	return p, nil
}

// exitCode turns Wait's result into an exit code: the process's own, or
// 128+n when signal n ended it.
func exitCode(cmd *exec.Cmd, err error) (int, error) {
	st := cmd.ProcessState
	if st == nil {
		return -1, err
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return st.ExitCode(), err
	}
	return st.ExitCode(), nil
}

func (p *Process) sampleLoop() {
	defer close(p.sampled)
	t := time.NewTicker(rssInterval)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.sampleRSS()
		}
	}
}

// sampleRSS reads VmHWM, the peak resident set size, from /proc.
func (p *Process) sampleRSS() {
	f, err := os.Open("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return
		}
		for {
			old := p.peakKB.Load()
			if kb <= old || p.peakKB.CompareAndSwap(old, kb) {
				return
			}
		}
	}
}

// Name returns the name the process was started under.
func (p *Process) Name() string { return p.name }

// LogPath returns the file its standard output and error go to.
func (p *Process) LogPath() string { return p.logPath }

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// HTTPAddr returns the host:port of the process's HTTP endpoint: a worker's
// /metrics, /healthz and /readyz, the simulator's API. Empty for NATS.
func (p *Process) HTTPAddr() string { return p.httpAddr }

// Done is closed once the process has exited and was reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (not its group). It returns
// os.ErrProcessDone after the process exited.
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("localstack: signal %s: %w", p.name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process's group, like kill -9: the process
// gets no chance to clean up. It returns os.ErrProcessDone after the
// process exited.
func (p *Process) Kill() error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("localstack: kill %s: %w", p.name, err)
	}
	return nil
}

// Wait waits until the process exits or ctx ends. exitCode is the
// process's exit code, or 128+n when signal n ended it; err is ctx's error
// when ctx ended first, or a failure to wait for the process — not a
// non-zero exit code.
func (p *Process) Wait(ctx context.Context) (exitCode int, err error) {
	select {
	case <-p.done:
		return p.exitCode, p.waitErr
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// PeakRSS returns the process's peak resident set size (VmHWM), in bytes:
// read now while the process runs, and otherwise the last value sampled —
// it is sampled every 200ms while the process runs, so it stays available
// after the process exited (VmHWM being a high-water mark, a peak between
// samples shows in the next one). It fails when no sample was taken.
func (p *Process) PeakRSS() (bytes int64, err error) {
	if !p.Exited() {
		p.sampleRSS()
	}
	kb := p.peakKB.Load()
	if kb < 0 {
		return 0, fmt.Errorf("localstack: no memory sample of %s", p.name)
	}
	return kb * 1024, nil
}

// stop sends SIGTERM, waits up to timeout, then kills the process group and
// waits for the process to be reaped. It reports whether it had to kill.
func (p *Process) stop(timeout time.Duration) (killed bool) {
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.Kill()
		<-p.done
		killed = true
	}
	<-p.sampled
	return killed
}

// reap waits for the process and its sampler to end.
func (p *Process) reap() {
	<-p.done
	<-p.sampled
}

// processSet tracks every process a Stack started.
type processSet struct {
	mu    sync.Mutex
	procs []*Process
}

func (s *processSet) add(p *Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
}

func (s *processSet) all() []*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Process(nil), s.procs...)
}
