package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// gatewayProxy stands between the workers and the gateway simulator and
// passes every request through, but for the keys of an ambiguous outage,
// a fault the simulator cannot make: it draws its faults per request and
// answers a replay of a charged key even during its own outage. For an
// armed key, the first charge the simulator answers 2xx — the money moved
// — reaches the worker as a 500, as if the answer were lost; from then on
// every request naming the key (a charge's Idempotency-Key, a lookup's
// idempotency_key parameter) is answered 503 without reaching the
// simulator, until lift. Its methods are safe for concurrent use.
type gatewayProxy struct {
	url    string // the workers' PAYSTREAM_GATEWAY_URL
	srv    *http.Server
	tr     *http.Transport
	served chan struct{} // closed when Serve returned

	mu   sync.Mutex // guards keys
	keys map[string]keyFault

	lost    atomic.Int64 // charges whose answer was replaced by a 500
	refused atomic.Int64 // requests answered 503
}

// keyFault is what the proxy does to the requests of one key.
type keyFault uint8

const (
	// keyArmed: the key's next charge answered 2xx loses its answer, and
	// the key is down.
	keyArmed keyFault = iota + 1
	// keyDown: every request naming the key is answered 503.
	keyDown
)

// startGatewayProxy listens on a free local port and forwards to target,
// the simulator's base URL. close stops it.
func startGatewayProxy(target string) (*gatewayProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("chaos: gateway proxy: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: gateway proxy: %w", err)
	}
	quiet := log.New(io.Discard, "", 0) // a worker killed mid-call is no news
	p := &gatewayProxy{
		url:    "http://" + ln.Addr().String(),
		tr:     &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second, DisableCompression: true},
		served: make(chan struct{}),
		keys:   map[string]keyFault{},
	}
	// A worker's call ends at the simulator when the worker gives up or
	// dies: the outbound request carries the inbound request's context,
	// which ends when the worker's connection closes.
	rp := &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport:      p.tr,
		ModifyResponse: p.loseAnswer,
		ErrorLog:       quiet,
	}
	p.srv = &http.Server{Handler: p.refuseDown(rp), ReadHeaderTimeout: 5 * time.Second, ErrorLog: quiet}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// close stops the proxy and waits for it.
func (p *gatewayProxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close()
	}
	<-p.served
	p.tr.CloseIdleConnections()
}

// arm arms keys: each loses its first charged answer and is down after.
func (p *gatewayProxy) arm(keys []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		p.keys[k] = keyArmed
	}
}

// lift ends every key's fault: from now on all requests pass.
func (p *gatewayProxy) lift() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.keys)
}

// down returns the keys that lost a charged answer and are down.
func (p *gatewayProxy) down() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, f := range p.keys {
		if f == keyDown {
			out = append(out, k)
		}
	}
	return out
}

// requestKey is the idempotency key a request names: a charge's header, or
// a lookup's query parameter.
func requestKey(r *http.Request) string {
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		return k
	}
	return r.URL.Query().Get("idempotency_key")
}

// refuseDown answers 503 to every request for a key that is down, and
// passes the others to next.
func (p *gatewayProxy) refuseDown(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := requestKey(r)
		p.mu.Lock()
		f := p.keys[key]
		p.mu.Unlock()
		if key == "" || f != keyDown {
			next.ServeHTTP(w, r)
			return
		}
		p.refused.Add(1)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "gateway down for this payment (chaos proxy)")
	})
}

// loseAnswer replaces the first 2xx answer to a charge of an armed key by
// a 500 and puts the key down: the simulator charged, the worker cannot
// know.
func (p *gatewayProxy) loseAnswer(resp *http.Response) error {
	if resp.Request.Method != http.MethodPost || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil
	}
	key := requestKey(resp.Request)
	p.mu.Lock()
	armed := p.keys[key] == keyArmed
	if armed {
		p.keys[key] = keyDown
	}
	p.mu.Unlock()
	if !armed {
		return nil
	}
	p.lost.Add(1)
	_, err := io.Copy(io.Discard, resp.Body)
	err = errors.Join(err, resp.Body.Close())
	if err != nil {
		// The charge is made either way; the worker gets trouble.
		return fmt.Errorf("chaos proxy: read the answer it loses: %w", err)
	}
	body := errorBody("response_lost", "charged, but the answer was lost (chaos proxy)")
	resp.StatusCode, resp.Status = http.StatusInternalServerError, "500 Internal Server Error"
	resp.Header = http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}}
	resp.Body, resp.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	return nil
}

// errorBody is a gateway error answer (docs/contract.md §5).
func errorBody(code, msg string) string {
	return `{"error":{"type":"api_error","code":"` + code + `","message":"` + msg + `"}}` + "\n"
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	body := errorBody(code, msg)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
