package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Network faults go through toxiproxy (as a library): every worker reaches
// NATS, Postgres and the gateway through three proxies of its own, and a
// scenario adds toxics to some of them for netFaultFor.
const netFaultFor = 10 * time.Second

// Link names: a worker's proxies.
const (
	linkNATS     = "nats"
	linkPostgres = "postgres"
	linkGateway  = "gateway"
)

var allLinks = []string{linkNATS, linkPostgres, linkGateway}

// toxic is one toxiproxy toxic (its JSON form).
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"` // upstream (worker → service) or downstream
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// netFault is a scenario's fault: toxics on links of some workers, or the
// links cut.
type netFault struct {
	name, doc string
	ci        bool
	// workers is how many workers (from w1) the fault hits; 0 = all.
	workers int
	links   []string
	toxics  []toxic
	// cut stops the links' proxies (connections closed, new ones
	// refused) instead of adding toxics.
	cut bool
}

func netScenarios() []Scenario {
	faults := []netFault{
		{name: "net-latency", ci: true, doc: "200ms ±100ms latency each way on every worker's links to NATS, Postgres and the gateway",
			links: allLinks, toxics: []toxic{
				{Name: "lat_up", Type: "latency", Stream: "upstream", Toxicity: 1, Attributes: map[string]any{"latency": 200, "jitter": 100}},
				{Name: "lat_down", Type: "latency", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{"latency": 200, "jitter": 100}},
			}},
		{name: "net-bandwidth", doc: "every worker's links limited to 32 KB/s each way",
			links: allLinks, toxics: []toxic{
				{Name: "bw_up", Type: "bandwidth", Stream: "upstream", Toxicity: 1, Attributes: map[string]any{"rate": 32}},
				{Name: "bw_down", Type: "bandwidth", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{"rate": 32}},
			}},
		{name: "net-reset", doc: "connections reset: gateway answers cut mid-response (after 100 bytes), and NATS and Postgres connections reset after 2s",
			links: allLinks, toxics: []toxic{
				{Name: "cut_mid_response", Type: "limit_data", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{"bytes": 100}},
				{Name: "reset", Type: "reset_peer", Stream: "upstream", Toxicity: 1, Attributes: map[string]any{"timeout": 2000}},
			}},
		{name: "net-blackhole", doc: "one-way blackhole: what worker w1 sends to NATS, Postgres and the gateway is dropped (each connection closed after 5s)",
			workers: 1, links: allLinks, toxics: []toxic{
				{Name: "blackhole", Type: "timeout", Stream: "upstream", Toxicity: 1, Attributes: map[string]any{"timeout": 5000}},
			}},
		{name: "net-cut-postgres", ci: true, doc: "worker w1 cut from Postgres, not from NATS", workers: 1, links: []string{linkPostgres}, cut: true},
		{name: "net-cut-nats", doc: "worker w1 cut from NATS, not from Postgres", workers: 1, links: []string{linkNATS}, cut: true},
	}
	out := make([]Scenario, len(faults))
	for i, f := range faults {
		out[i] = Scenario{Name: f.name, Doc: f.doc, CI: f.ci, prepare: prepareProxies,
			fault: func(ctx context.Context, r *infraRun) error { return f.inject(ctx, r) }}
	}
	return out
}

// prepareProxies starts three proxies per worker and points the worker at
// them.
func prepareProxies(_ context.Context, r *infraRun) error {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	r.proxies = map[string]map[string]*toxiproxy.Proxy{}
	var all []*toxiproxy.Proxy
	r.cleanup = append(r.cleanup, func() {
		for _, p := range all {
			p.Stop()
		}
	})
	natsAddr := strings.TrimPrefix(r.stack.NATSURL(), "nats://")
	dbu, err := url.Parse(r.dbURL)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	gwu, err := url.Parse(r.simURL)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	for i := range r.cfg.Workers {
		name := fmt.Sprintf("w%d", i+1)
		r.proxies[name] = map[string]*toxiproxy.Proxy{}
		for link, upstream := range map[string]string{linkNATS: natsAddr, linkPostgres: dbu.Host, linkGateway: gwu.Host} {
			p := toxiproxy.NewProxy(srv, name+"-"+link, "127.0.0.1:0", upstream)
			if err := p.Start(); err != nil {
				return fmt.Errorf("chaos: proxy %s-%s: %w", name, link, err)
			}
			all = append(all, p)
			r.proxies[name][link] = p
		}
		db := *dbu
		db.Host = r.proxies[name][linkPostgres].Listen
		r.setWorkerEnv(name, map[string]string{
			"PAYSTREAM_NATS_URL":     "nats://" + r.proxies[name][linkNATS].Listen,
			"PAYSTREAM_DATABASE_URL": db.String(),
			"PAYSTREAM_GATEWAY_URL":  "http://" + r.proxies[name][linkGateway].Listen,
		})
	}
	r.logf("toxiproxy: %d proxies (NATS, Postgres, gateway per worker)", len(all))
	return nil
}

// inject applies the fault for netFaultFor, then lifts it.
func (f netFault) inject(ctx context.Context, r *infraRun) error {
	var hit []*toxiproxy.Proxy
	for i := range r.cfg.Workers {
		if f.workers > 0 && i >= f.workers {
			break
		}
		for _, l := range f.links {
			hit = append(hit, r.proxies[fmt.Sprintf("w%d", i+1)][l])
		}
	}
	r.begin("%s, for %s", f.doc, netFaultFor)
	for _, p := range hit {
		if f.cut {
			p.Stop()
			continue
		}
		for _, t := range f.toxics {
			b, err := json.Marshal(t)
			if err != nil {
				return fmt.Errorf("chaos: %w", err)
			}
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
				return fmt.Errorf("chaos: toxic %s on %s: %w", t.Name, p.Name, err)
			}
		}
	}
	sleep(ctx, netFaultFor)
	for _, p := range hit {
		if f.cut {
			if err := p.Start(); err != nil {
				return fmt.Errorf("chaos: restore proxy %s: %w", p.Name, err)
			}
			continue
		}
		p.Toxics.ResetToxics(context.WithoutCancel(ctx))
	}
	r.end("links restored")
	return nil
}
