package cmdwire

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ProbeTimeout bounds a whole Probe; container healthchecks give a probe a
// few seconds (docker-compose.yml: timeout 3s).
const ProbeTimeout = 2 * time.Second

// Probe GETs path from the server listening on listen (a host:port whose
// empty or unspecified host means this host's loopback address), copies the
// start of the answer to out and fails unless the status is 200. It is the
// `healthcheck` subcommand of images with no shell and no HTTP client.
func Probe(ctx context.Context, listen, path string, out io.Writer) error {
	url := "http://" + localAddr(listen) + path
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(out, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", url, resp.Status)
	}
	return nil
}

// localAddr turns a listen address into one to dial on this host: an
// empty or unspecified host becomes the loopback address.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
