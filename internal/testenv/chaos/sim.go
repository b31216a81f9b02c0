package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/paystream/paystream/gateway/sim"
)

// simClient changes the gateway simulator's configuration at run time
// (PUT /v1/config).
type simClient struct {
	base string
	http *http.Client
}

func newSimClient(base string) *simClient {
	return &simClient{base: base, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
}

func (c *simClient) close() { c.http.CloseIdleConnections() }

// set replaces the simulator's configuration.
func (c *simClient) set(ctx context.Context, cfg sim.Config) error {
	body, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("chaos: simulator config: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1/config", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("chaos: simulator config: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("chaos: simulator config: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chaos: simulator config: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
