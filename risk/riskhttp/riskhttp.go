// Package riskhttp is the HTTP risk.Checker: POST {base}/v1/risk, the
// simulator's risk API (gateway/sim). It is the adapter; package risk, which
// processing imports, stays free of I/O.
package riskhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/paystream/paystream/risk"
)

// maxAnswerBytes bounds a risk answer's body.
const maxAnswerBytes = 64 << 10

// HTTP is a risk.Checker speaking the simulator's risk API: POST
// {base}/v1/risk with the Query as JSON, answered 200
// {"decision":"allow"|"deny","reason":"…"}; any other answer is an error.
// It is safe for concurrent use.
type HTTP struct {
	name     string
	endpoint string
	client   *http.Client
}

// New returns a risk.Checker for the risk service at base, an absolute
// http(s) URL without user info, query or fragment. client nil means a
// client of its own (a clone of http.DefaultTransport); the caller's
// context bounds every call. Close releases its idle connections.
func New(base string, client *http.Client) (*HTTP, error) {
	if err := CheckURL(base); err != nil {
		return nil, err
	}
	u, _ := url.Parse(base)
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &HTTP{name: u.Host, endpoint: strings.TrimSuffix(u.String(), "/") + "/v1/risk", client: client}, nil
}

// CheckURL returns nil when base is a URL New accepts. Its errors
// never repeat the URL (it might carry a password).
func CheckURL(base string) error {
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return errors.New("risk url cannot be parsed")
	case u.User != nil:
		return errors.New("risk url must not carry user info")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("risk url must be an absolute http:// or https:// URL")
	case u.Host == "":
		return errors.New("risk url has no host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("risk url must not carry a query or fragment")
	}
	return nil
}

// Close closes the client's idle connections.
func (h *HTTP) Close() { h.client.CloseIdleConnections() }

// Name returns the service's host (and port).
func (h *HTTP) Name() string { return h.name }

// Check posts q and reads the decision.
func (h *HTTP) Check(ctx context.Context, q risk.Query) (risk.Decision, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return risk.Decision{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.endpoint, bytes.NewReader(body))
	if err != nil {
		return risk.Decision{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return risk.Decision{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return risk.Decision{}, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return risk.Decision{}, fmt.Errorf("answered %d", resp.StatusCode)
	}
	var a struct {
		Decision string `json:"decision"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return risk.Decision{}, fmt.Errorf("malformed answer: %w", err)
	}
	return risk.Decision{Verdict: risk.Verdict(a.Decision), Reason: a.Reason, Provider: h.name}, nil
}
