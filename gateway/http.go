package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// DefaultTimeout is the default of HTTPConfig.Timeout.
const DefaultTimeout = 10 * time.Second

// MaxResponseBytes is the most of a response body that HTTP.Charge and
// HTTP.Lookup read; a 2xx body longer than that is malformed.
const MaxResponseBytes = 1 << 20

// maxConnsPerHost sizes the default transport's idle pool for 4096
// concurrent calls to one gateway.
const maxConnsPerHost = 4096

// HTTPConfig configures an HTTP gateway client. The zero value of each
// optional field means its default.
type HTTPConfig struct {
	// BaseURL is the gateway's base URL, http or https, e.g.
	// https://gateway.example.com; charges go to {BaseURL}/v1/charges.
	// Required. It may carry a path prefix; user info is refused.
	BaseURL string
	// Timeout bounds one Charge or Lookup call (connect, send, wait, read).
	// Default DefaultTimeout (10s). A call that runs out of it is a
	// payment.ClassTrouble *payment.GatewayError with Code
	// payment.CodeTimeout.
	Timeout time.Duration
	// Name identifies the gateway in outcomes and logs. Default: the host
	// (and port) of BaseURL.
	Name string
	// Client is the HTTP client to use. Default: a client of its own with a
	// transport sized for 4096 concurrent calls. Either way redirects are
	// not followed (a 3xx is classified as payment.ClassTrouble): a given
	// client is copied with its CheckRedirect replaced. HTTP.Close closes
	// its idle connections either way.
	Client *http.Client
	// APIKey supplies the key sent as "Authorization: Bearer <key>" on
	// every charge and lookup (docs/contract.md §5), typically a *KeyFile.
	// nil, or a Key of "", sends no Authorization header.
	APIKey KeySource
	// TLS is the TLS configuration of the default client's transport for an
	// https BaseURL (see TLSFiles.Config). nil means Go's defaults: the
	// system roots, no client certificate. It cannot be combined with
	// Client (configure that client's transport instead), and a
	// configuration that turns certificate verification off is refused.
	TLS *tls.Config
	// Tracing, when not nil, traces each call with otelhttp and sends the
	// W3C traceparent header (gateway/trace.go); nil is tracing off.
	Tracing *telemetry.Tracing
}

// HTTP is a gateway client speaking docs/contract.md §5 over HTTP: Charge
// and Lookup. It is safe for concurrent use. Close it to release idle
// connections.
type HTTP struct {
	name     string
	endpoint string
	timeout  time.Duration
	client   *http.Client
	apiKey   KeySource
}

// errCallTimeout is the cancellation cause of a call that ran out of
// HTTPConfig.Timeout.
var errCallTimeout = errors.New("gateway call timed out")

// NewHTTP returns a client for the gateway at cfg.BaseURL. It fails when the
// URL is not an absolute http(s) URL without user info, Timeout is
// negative, or TLS is set together with Client or turns certificate
// verification off.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("gateway: parse base url: %w", err)
	}
	var problems []error
	if u.Scheme != "http" && u.Scheme != "https" {
		problems = append(problems, fmt.Errorf("gateway: base url scheme must be http or https, got %q", u.Scheme))
	}
	if u.Host == "" {
		problems = append(problems, errors.New("gateway: base url has no host"))
	}
	if u.User != nil {
		problems = append(problems, errors.New("gateway: base url must not carry user info"))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		problems = append(problems, errors.New("gateway: base url must not carry a query or fragment"))
	}
	if cfg.Timeout < 0 {
		problems = append(problems, fmt.Errorf("gateway: timeout must not be negative, got %s", cfg.Timeout))
	}
	if cfg.TLS != nil && cfg.Client != nil {
		problems = append(problems, errors.New("gateway: TLS and Client exclude each other: configure the client's transport"))
	}
	if cfg.TLS != nil && cfg.TLS.InsecureSkipVerify {
		problems = append(problems, errors.New("gateway: certificate verification must stay on: give the gateway's CA instead"))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	g := &HTTP{
		name:     cfg.Name,
		endpoint: strings.TrimSuffix(u.String(), "/") + "/v1/charges",
		timeout:  cfg.Timeout,
		client:   cfg.Client,
		apiKey:   cfg.APIKey,
	}
	if g.name == "" {
		g.name = u.Host
	}
	if g.timeout == 0 {
		g.timeout = DefaultTimeout
	}
	if g.client == nil {
		g.client = newClient(cfg.TLS)
	} else {
		c := *g.client // the caller's client keeps following redirects elsewhere
		c.CheckRedirect = noRedirect
		g.client = &c
	}
	g.client = traced(g.client, cfg.Tracing)
	return g, nil
}

// newClient returns the default client: its own transport, sized for many
// concurrent calls to one host, TLS as tlsCfg says (nil: Go's defaults), and
// no redirects (a payment POST is never re-sent elsewhere; a 3xx is
// classified instead).
func newClient(tlsCfg *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          maxConnsPerHost,
			MaxIdleConnsPerHost:   maxConnsPerHost,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       tlsCfg,
		},
		CheckRedirect: noRedirect,
	}
}

// noRedirect makes a client return a 3xx answer instead of following it
// (docs/contract.md §5: the client follows no redirect).
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Name returns the gateway's name (HTTPConfig.Name).
func (g *HTTP) Name() string { return g.name }

// Close closes the client's idle connections. Calls may still be made
// afterwards; they open new connections. Close is idempotent.
func (g *HTTP) Close() { g.client.CloseIdleConnections() }

// chargeBody is the request body of POST /v1/charges (docs/contract.md §5).
type chargeBody struct {
	PaymentID     string `json:"payment_id"`
	MerchantID    string `json:"merchant_id"`
	AmountMinor   int64  `json:"amount_minor"`
	Currency      string `json:"currency"`
	PaymentMethod string `json:"payment_method"`
	Description   string `json:"description,omitempty"`
}

// Charge asks the gateway to charge c, sending c.IdempotencyKey as the
// Idempotency-Key header (and the API key, when HTTPConfig.APIKey gives one,
// as "Authorization: Bearer"). It returns a Result when the gateway decided
// (succeeded or declined) and otherwise a *payment.GatewayError (see Classify); a call that
// runs out of HTTPConfig.Timeout is a payment.ClassTrouble *payment.GatewayError with Code
// payment.CodeTimeout. When ctx ends first, Charge returns ctx's error wrapped, not
// an *payment.GatewayError. An idempotency key that is not 1–255 bytes of printable ASCII
// without space is refused before sending, as payment.ClassRejected with Code
// payment.CodeInvalidCharge.
func (g *HTTP) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	if !validKey(c.IdempotencyKey) {
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, Code: payment.CodeInvalidCharge,
			Message: "idempotency key must be 1-255 bytes of printable ASCII without space"}
	}
	body, err := json.Marshal(chargeBody{
		PaymentID:     c.PaymentID,
		MerchantID:    c.MerchantID,
		AmountMinor:   c.AmountMinor,
		Currency:      c.Currency,
		PaymentMethod: c.PaymentMethod,
		Description:   c.Description,
	})
	if err != nil { // cannot happen with string and int64 fields
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, Code: payment.CodeInvalidCharge, Message: "encode charge", Err: err}
	}

	header := http.Header{
		"Content-Type":    {"application/json"},
		"Accept":          {"application/json"},
		"Idempotency-Key": {c.IdempotencyKey},
	}
	status, respHeader, data, err := g.call(ctx, "charge", http.MethodPost, g.endpoint, header, body)
	if err != nil {
		return payment.ChargeResult{}, err
	}
	return Classify(status, respHeader, data, time.Now())
}

// Lookup asks the gateway whether it made a charge under the idempotency
// key (docs/contract.md §5: GET {BaseURL}/v1/charges?idempotency_key=…,
// the key percent-encoded). It returns a LookupResult with Found true and
// the charge when the gateway charged under the key, Found false when it
// answered 404 no_such_charge (no charge, a decline included, and none in
// flight), and otherwise a *payment.GatewayError (see ClassifyLookup): a 409
// (a call with the key still running) is payment.ClassRetry, gateway
// trouble payment.ClassTrouble. Timeout, body bounds and ctx behave as for
// Charge; a key that is not 1–255 bytes of printable ASCII without space is
// refused before sending, as payment.ClassRejected with Code
// payment.CodeInvalidKey.
func (g *HTTP) Lookup(ctx context.Context, key string) (payment.LookupResult, error) {
	if !validKey(key) {
		return payment.LookupResult{}, &payment.GatewayError{Class: payment.ClassRejected, Code: payment.CodeInvalidKey,
			Message: "idempotency key must be 1-255 bytes of printable ASCII without space"}
	}
	target := g.endpoint + "?" + url.Values{"idempotency_key": {key}}.Encode()
	status, respHeader, data, err := g.call(ctx, "lookup", http.MethodGet, target, http.Header{"Accept": {"application/json"}}, nil)
	if err != nil {
		return payment.LookupResult{}, err
	}
	return ClassifyLookup(status, respHeader, data, time.Now())
}

// call sends one request of operation op (for error messages) within the
// call timeout and reads at most MaxResponseBytes of the answer. err is the
// caller's context error wrapped, or a *payment.GatewayError: the request
// could not be built, a timeout, a connection error, or a 2xx body over the
// bound; a longer non-2xx body is cut to the bound.
func (g *HTTP) call(ctx context.Context, op, method, target string, header http.Header, body []byte) (int, http.Header, []byte, error) {
	callCtx, cancel := context.WithTimeoutCause(ctx, g.timeout, errCallTimeout)
	defer cancel()
	var bodyReader io.Reader
	if body != nil {
		bodyReader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(callCtx, method, target, bodyReader)
	if err != nil { // cannot happen with the base URL checked by NewHTTP
		code := payment.CodeInvalidCharge
		if method == http.MethodGet {
			code = payment.CodeInvalidKey
		}
		return 0, nil, nil, &payment.GatewayError{Class: payment.ClassRejected, Code: code, Message: "build " + op + " request", Err: err}
	}
	req.Header = header
	var apiKey string
	if g.apiKey != nil {
		if apiKey = g.apiKey.Key(); apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
	}

	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, nil, g.callError(ctx, callCtx, op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return 0, nil, nil, g.callError(ctx, callCtx, op, err)
	}
	if len(data) > MaxResponseBytes {
		if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
			return 0, nil, nil, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: resp.StatusCode, Code: payment.CodeMalformedResponse,
				Message: fmt.Sprintf("response body over %d bytes", MaxResponseBytes)}
		}
		data = data[:MaxResponseBytes]
	}
	if apiKey != "" {
		// A gateway that echoes the key in an error message must not put
		// it into our errors, logs and dead letters.
		data = bytes.ReplaceAll(data, []byte(apiKey), []byte("xxxxx"))
	}
	return resp.StatusCode, resp.Header, data, nil
}

// callError turns an error of sending the request or reading the response
// into the caller's context error (when ctx ended), a timeout or a
// connection error.
func (g *HTTP) callError(ctx, callCtx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if cause := context.Cause(ctx); cause != nil && cause != ctxErr {
			return fmt.Errorf("gateway %s: %s: %w (cause: %w)", g.name, op, ctxErr, cause)
		}
		return fmt.Errorf("gateway %s: %s: %w", g.name, op, ctxErr)
	}
	if context.Cause(callCtx) == errCallTimeout {
		return &payment.GatewayError{Class: payment.ClassTrouble, Code: payment.CodeTimeout,
			Message: fmt.Sprintf("no answer within %s", g.timeout), Err: context.DeadlineExceeded}
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		// No connection, so no request: the gateway cannot have charged.
		code := payment.CodeConnection
		if errors.Is(err, syscall.ECONNREFUSED) {
			code = payment.CodeConnectionRefused
		}
		return &payment.GatewayError{Class: payment.ClassTrouble, Code: code, Message: "could not connect", Err: err, NotSent: true}
	}
	return &payment.GatewayError{Class: payment.ClassTrouble, Code: payment.CodeConnection, Message: "request failed", Err: err}
}

// validKey reports whether k is 1–255 bytes of printable ASCII without
// space (0x21–0x7E), as docs/contract.md §2 requires of idempotency keys.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := range len(k) {
		if k[i] < 0x21 || k[i] > 0x7E {
			return false
		}
	}
	return true
}
