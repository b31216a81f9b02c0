// Package composetest runs docker-compose.yml for real and audits it from
// outside: `make compose-test` starts the stack (nats, postgres, gatewaysim,
// three workers) under a project name of its own, publishes payments with
// the publisher service, injects container faults while the work flows
// (docker pause past the lease, a network partition, docker kill, restarts
// of Postgres and NATS, scaling the workers) and, after each, checks with
// internal/testenv/audit that nothing was lost, nobody was charged twice and
// every outcome was announced. The test itself is behind the build tag
// composetest, so that `go test ./...` needs no Docker engine.
//
// Everything shells out to `docker` and `docker compose` with a timeout.
package composetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config says how to run the stack.
type Config struct {
	// Dir is the repository root (docker-compose.yml is there).
	Dir string
	// Compose is the compose command, e.g. ["docker", "compose"] or the
	// path of a standalone docker-compose v2 binary.
	Compose []string
	// Project is the compose project name; unique per run.
	Project string
	// Env is added to the environment of every compose command: the image
	// variables (PAYSTREAM_IMAGE, ...) and the host ports.
	Env map[string]string
	// Logf prints progress; nil prints nothing.
	Logf func(format string, args ...any)
}

// Stack is a running compose project.
type Stack struct {
	cfg Config
	// NATSPort, PostgresPort and GatewayPort are the host ports (on
	// 127.0.0.1) of the nats, postgres and gatewaysim services.
	NATSPort, PostgresPort, GatewayPort int
}

// New picks free host ports and returns a Stack that is not started yet.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Compose) == 0 {
		cfg.Compose = []string{"docker", "compose"}
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	s := &Stack{cfg: cfg}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	s.NATSPort, s.PostgresPort, s.GatewayPort = ports[0], ports[1], ports[2]
	env := map[string]string{
		"HOST_NATS_PORT":         strconv.Itoa(ports[0]),
		"HOST_POSTGRES_PORT":     strconv.Itoa(ports[1]),
		"HOST_GATEWAYSIM_PORT":   strconv.Itoa(ports[2]),
		"HOST_NATS_MONITOR_PORT": strconv.Itoa(ports[3]),
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	s.cfg.Env = env
	return s, nil
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NATSURL, DatabaseURL and GatewayURL reach the services from the host.
func (s *Stack) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.NATSPort) }

// DatabaseURL is the workers' database, from the host.
func (s *Stack) DatabaseURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/paystream?sslmode=disable", s.PostgresPort)
}

// GatewayURL is the gateway simulator, from the host.
func (s *Stack) GatewayURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.GatewayPort) }

// Network is the compose project's default network.
func (s *Stack) Network() string { return s.cfg.Project + "_default" }

// run runs name args with a timeout and returns its standard output; the
// error carries the end of standard error.
func (s *Stack) run(ctx context.Context, timeout time.Duration, stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.cfg.Dir
	cmd.Env = os.Environ()
	for k, v := range s.cfg.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.WaitDelay = 5 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// Compose runs a compose command of the project.
func (s *Stack) Compose(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	full := append(append([]string{}, s.cfg.Compose[1:]...), "--project-name", s.cfg.Project, "--file", filepath.Join(s.cfg.Dir, "docker-compose.yml"))
	full = append(full, args...)
	return s.run(ctx, timeout, nil, s.cfg.Compose[0], full...)
}

// Docker runs a docker command.
func (s *Stack) Docker(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return s.run(ctx, timeout, nil, "docker", args...)
}

// Up starts the stack without building and waits until every service is
// healthy (or, for the one-shot outbox-migrate, done).
func (s *Stack) Up(ctx context.Context) error {
	_, err := s.Compose(ctx, 5*time.Minute, "up", "--detach", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "240")
	return err
}

// Down removes the project's containers, networks and volumes.
func (s *Stack) Down(ctx context.Context) error {
	_, err := s.Compose(ctx, 3*time.Minute, "down", "--volumes", "--remove-orphans", "--timeout", "5")
	return err
}

// Logs returns the last lines of the services' logs, for a failure.
func (s *Stack) Logs(ctx context.Context, lines int, services ...string) string {
	args := append([]string{"logs", "--no-color", "--tail", strconv.Itoa(lines)}, services...)
	out, err := s.Compose(ctx, time.Minute, args...)
	if err != nil {
		return out + "\n" + err.Error()
	}
	return out
}

// Containers returns the ids of the running containers of service, in a
// stable order (by name).
func (s *Stack) Containers(ctx context.Context, service string) ([]string, error) {
	out, err := s.Docker(ctx, 30*time.Second, "ps", "--filter", "label=com.docker.compose.project="+s.cfg.Project,
		"--filter", "label=com.docker.compose.service="+service, "--format", "{{.Names}} {{.ID}}")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	var ids []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 2 {
			ids = append(ids, f[1])
		}
	}
	return ids, nil
}

// Container returns the id of the one container of service.
func (s *Stack) Container(ctx context.Context, service string) (string, error) {
	ids, err := s.Containers(ctx, service)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("service %s: %d containers running", service, len(ids))
	}
	return ids[0], nil
}

// State is what docker inspect says of a container.
type State struct {
	Running, Paused, Restarting bool
	Health                      string
	RestartCount                int
}

// Inspect reads a container's state.
func (s *Stack) Inspect(ctx context.Context, id string) (State, error) {
	out, err := s.Docker(ctx, 30*time.Second, "inspect", "--format",
		"{{json .State}} {{.RestartCount}}", id)
	if err != nil {
		return State{}, err
	}
	js, count, _ := strings.Cut(strings.TrimSpace(out), "} ")
	var st struct {
		Running, Paused, Restarting bool
		Health                      *struct{ Status string }
	}
	if err := json.Unmarshal([]byte(js+"}"), &st); err != nil {
		return State{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	res := State{Running: st.Running, Paused: st.Paused, Restarting: st.Restarting}
	if st.Health != nil {
		res.Health = st.Health.Status
	}
	res.RestartCount, _ = strconv.Atoi(strings.TrimSpace(count))
	return res, nil
}

// WaitHealthy polls until the container is running and healthy.
func (s *Stack) WaitHealthy(ctx context.Context, id string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last State
	var lastErr error
	for {
		last, lastErr = s.Inspect(ctx, id)
		if lastErr == nil && last.Running && !last.Paused && (last.Health == "" || last.Health == "healthy") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s not healthy after %s: %+v %v", short(id), limit, last, lastErr)
		case <-time.After(time.Second):
		}
	}
}

// WaitServiceHealthy waits until service has n running, healthy containers.
func (s *Stack) WaitServiceHealthy(ctx context.Context, service string, n int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		ids, err := s.Containers(ctx, service)
		if err == nil && len(ids) == n {
			healthy := 0
			for _, id := range ids {
				if st, err := s.Inspect(ctx, id); err == nil && st.Running && st.Health == "healthy" {
					healthy++
				}
			}
			if healthy == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service %s: not %d healthy containers after %s (%d running)", service, n, limit, len(ids))
		case <-time.After(time.Second):
		}
	}
}

// short abbreviates a container id.
func short(id string) string { return id[:min(12, len(id))] }

// PublishSummary is the publisher's --summary-json.
type PublishSummary struct {
	Published   int64 `json:"published"`
	Rejected    int64 `json:"duplicates_rejected_by_server"`
	Failed      int64 `json:"failed"`
	Valid       int64 `json:"valid"`
	Duplicates  int64 `json:"duplicates_sent"`
	Invalid     int64 `json:"invalid_sent"`
	Sent        int64 `json:"sent"`
	Interrupted bool  `json:"interrupted"`
	Rate        float64
}

// Publish runs the publisher service once (docker compose run): b.Count
// generated items of b.Seed with 5% duplicates and 1% invalid messages,
// from merchants m001…m010.
// A positive b.Rate spreads the batch over Count/Rate seconds.
func (s *Stack) Publish(ctx context.Context, b Batch) (PublishSummary, error) {
	out, err := s.Compose(ctx, 5*time.Minute, "run", "--rm", "--no-deps", "-T", "publisher",
		"--count", strconv.Itoa(b.Count), "--seed", strconv.FormatInt(b.Seed, 10), "--rate", fmt.Sprint(b.Rate),
		"--merchants", strconv.Itoa(Merchants), "--duplicates", fmt.Sprint(Duplicates), "--invalid", fmt.Sprint(Invalid),
		"--summary-json", "--quiet")
	var sum PublishSummary
	if jerr := json.Unmarshal([]byte(lastLine(out)), &sum); jerr != nil && err == nil {
		err = fmt.Errorf("publisher summary %q: %w", lastLine(out), jerr)
	}
	if err == nil && (sum.Failed > 0 || sum.Interrupted) {
		err = fmt.Errorf("publisher: %d publishes failed (interrupted %t)", sum.Failed, sum.Interrupted)
	}
	return sum, err
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
