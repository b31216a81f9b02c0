package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// GatewaySpec is one gateway of PAYSTREAM_GATEWAYS (docs/contract.md §5,
// "Several gateways").
type GatewaySpec struct {
	// Name is the gateway's name, recorded on rows, calls and outcome
	// events: 1–32 of [a-z0-9_-]. Empty only for the one gateway of
	// PAYSTREAM_GATEWAY_URL without PAYSTREAM_GATEWAY_NAME (the client then
	// names it after the URL's host).
	Name string
	// URL is the gateway's base URL, http or https, or "fake".
	URL string
	// Weight is its share of the payments no rule sends elsewhere, 0 to
	// 1000; 0 makes it a standby (rules and failover only). Default 1.
	Weight int
	// Budget is its fleet-wide budget in calls per second, 0 none. Default
	// PAYSTREAM_GATEWAY_BUDGET.
	Budget float64
	// Merchants and Currencies are its routing rules.
	Merchants  []string
	Currencies []string
}

var (
	gatewayNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)
	merchantRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	currencyRE    = regexp.MustCompile(`^[A-Z]{3}$`)
)

// ParseGateways parses the value of PAYSTREAM_GATEWAYS: entries separated
// by commas, each `name=url` followed by options separated by semicolons —
// `weight=N` (0–1000, default 1), `budget=R` (calls per second ≥ 0, default
// defaultBudget), `merchants=m1|m2`, `currencies=EUR|GBP`. Example:
//
//	acq_a=https://a.example;weight=3;currencies=EUR|GBP,acq_b=https://b.example;budget=200
//
// It returns every problem at once. Names are unique, and at least one
// gateway has a weight above 0.
func ParseGateways(s string, defaultBudget float64) ([]GatewaySpec, error) {
	var (
		out  []GatewaySpec
		errs []string
		seen = map[string]bool{}
	)
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		where := fmt.Sprintf("gateway %d", i+1)
		if entry == "" {
			errs = append(errs, where+": empty entry")
			continue
		}
		parts := strings.Split(entry, ";")
		name, rawURL, ok := strings.Cut(strings.TrimSpace(parts[0]), "=")
		if !ok {
			errs = append(errs, where+`: must start with name=url`)
			continue
		}
		name, rawURL = strings.TrimSpace(name), strings.TrimSpace(rawURL)
		if gatewayNameRE.MatchString(name) {
			where = fmt.Sprintf("gateway %q", name)
		} else {
			errs = append(errs, fmt.Sprintf("%s: name must be 1–32 of a-z, 0-9, _ and -, got %q", where, name))
		}
		if seen[name] {
			errs = append(errs, where+": named twice")
		}
		seen[name] = true
		if err := checkGatewayURL(rawURL); err != nil {
			errs = append(errs, fmt.Sprintf("%s: url %s", where, err))
		}
		g := GatewaySpec{Name: name, URL: rawURL, Weight: 1, Budget: defaultBudget}
		for _, opt := range parts[1:] {
			k, v, ok := strings.Cut(strings.TrimSpace(opt), "=")
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: option %q must be key=value", where, opt))
				continue
			}
			switch k {
			case "weight":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > 1000 {
					errs = append(errs, fmt.Sprintf("%s: weight must be an integer from 0 to 1000, got %q", where, v))
				}
				g.Weight = n
			case "budget":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f != f || f > 1e9 {
					errs = append(errs, fmt.Sprintf("%s: budget must be calls per second ≥ 0, got %q", where, v))
				}
				g.Budget = f
			case "merchants":
				g.Merchants = strings.Split(v, "|")
				for _, m := range g.Merchants {
					if !merchantRE.MatchString(m) {
						errs = append(errs, fmt.Sprintf("%s: merchant %q is not a merchant id (1–64 of A-Z, a-z, 0-9, _, -)", where, m))
					}
				}
			case "currencies":
				g.Currencies = strings.Split(v, "|")
				for _, c := range g.Currencies {
					if !currencyRE.MatchString(c) {
						errs = append(errs, fmt.Sprintf("%s: currency %q is not an upper-case ISO 4217 code", where, c))
					}
				}
			default:
				errs = append(errs, fmt.Sprintf("%s: unknown option %q (weight, budget, merchants, currencies)", where, k))
			}
		}
		out = append(out, g)
	}
	if len(errs) == 0 {
		total := 0
		for _, g := range out {
			total += g.Weight
		}
		if total == 0 {
			errs = append(errs, "at least one gateway needs a weight above 0")
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// GatewaySpecs returns the worker's gateways: those of PAYSTREAM_GATEWAYS,
// or the one of PAYSTREAM_GATEWAY_URL (named PAYSTREAM_GATEWAY_NAME,
// budget PAYSTREAM_GATEWAY_BUDGET) as a fleet of one. c must be valid.
func (c Config) GatewaySpecs() []GatewaySpec {
	if c.Gateways == "" {
		return []GatewaySpec{{Name: c.GatewayName, URL: c.GatewayURL, Weight: 1, Budget: c.GatewayBudget}}
	}
	specs, err := ParseGateways(c.Gateways, c.GatewayBudget)
	if err != nil {
		panic("config: GatewaySpecs of an invalid Config: " + err.Error())
	}
	return specs
}

// checkGatewayURLOrList is the rule of PAYSTREAM_GATEWAY_URL: required unless
// PAYSTREAM_GATEWAYS names the gateways, and then unset.
func checkGatewayURLOrList(gatewayURL, gateways string) error {
	if gateways != "" {
		if gatewayURL != "" {
			return fmt.Errorf("must be unset when %s names the gateways", ref("GATEWAYS"))
		}
		return nil
	}
	return checkGatewayURL(gatewayURL)
}
