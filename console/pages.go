package console

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
)

type overviewData struct {
	ops.OverviewReport
	Chart     template.HTML
	DLReasons []reasonCount
}

type reasonCount struct {
	Reason string
	N      uint64
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	rep, err := s.backend.Overview(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := overviewData{OverviewReport: rep, Chart: outcomeChart(rep.Outcomes, rep.OutcomeStep)}
	for k, n := range rep.DeadLetters {
		d.DLReasons = append(d.DLReasons, reasonCount{k, n})
	}
	sort.Slice(d.DLReasons, func(i, j int) bool { return d.DLReasons[i].Reason < d.DLReasons[j].Reason })
	p := s.newPage(r, "Overview", "overview", d)
	p.Refresh = int(s.cfg.Refresh.Seconds())
	s.render(w, http.StatusOK, "overview.html", p)
}

// searchForm is the payments search form as submitted.
type searchForm struct {
	ID, Merchant, Status, Error, Min, Max, Since, Until, Cursor string
}

type paymentsData struct {
	Form     searchForm
	Statuses []string
	Result   ops.SearchResult
	Problem  string
	NextURL  string
	Searched bool
}

// parseTime reads a form time: RFC 3339, or the browser's datetime-local
// (taken as UTC).
func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want 2026-12-02T09:30 in UTC, or RFC 3339)", v)
}

func (s *Server) payments(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := searchForm{ID: strings.TrimSpace(q.Get("id")), Merchant: strings.TrimSpace(q.Get("merchant")), Status: q.Get("status"),
		Error: strings.TrimSpace(q.Get("error")), Min: q.Get("min"), Max: q.Get("max"), Since: q.Get("since"),
		Until: q.Get("until"), Cursor: q.Get("cursor")}
	d := paymentsData{Form: f, Searched: len(q) > 0}
	for _, st := range []payment.Status{payment.StatusProcessing, payment.StatusSucceeded, payment.StatusDeclined,
		payment.StatusFailed, payment.StatusUnknown} {
		d.Statuses = append(d.Statuses, string(st))
	}
	sf := ops.PaymentFilter{ID: f.ID, MerchantID: f.Merchant, ErrorCode: f.Error}
	var problems []string
	if f.Status != "" {
		if !slices.Contains(d.Statuses, f.Status) {
			problems = append(problems, "status: unknown status "+strconv.Quote(f.Status))
		}
		sf.Status = payment.Status(f.Status)
	}
	for _, a := range []struct {
		name, v string
		dst     *int64
	}{{"minimum amount", f.Min, &sf.MinAmount}, {"maximum amount", f.Max, &sf.MaxAmount}} {
		if a.v == "" {
			continue
		}
		n, err := strconv.ParseInt(a.v, 10, 64)
		if err != nil || n < 0 {
			problems = append(problems, a.name+": want a whole number of minor units")
			continue
		}
		*a.dst = n
	}
	var err error
	if sf.Since, err = parseTime(f.Since); err != nil {
		problems = append(problems, "since: "+err.Error())
	}
	if sf.Until, err = parseTime(f.Until); err != nil {
		problems = append(problems, "until: "+err.Error())
	}
	if len(problems) > 0 {
		d.Problem = strings.Join(problems, "; ")
		s.render(w, http.StatusBadRequest, "payments.html", s.newPage(r, "Payments", "payments", d))
		return
	}
	res, err := s.backend.SearchPayments(r.Context(), ops.SearchQuery{Filter: sf, Cursor: f.Cursor, Limit: 50})
	if err != nil {
		if errors.Is(err, ops.ErrBadCursor) {
			d.Problem = "the page cursor is not valid: start the search again"
			s.render(w, http.StatusBadRequest, "payments.html", s.newPage(r, "Payments", "payments", d))
			return
		}
		s.fail(w, r, err)
		return
	}
	d.Result = res
	if res.Next != "" {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("cursor", res.Next)
		d.NextURL = "/payments?" + nq.Encode()
	}
	s.render(w, http.StatusOK, "payments.html", s.newPage(r, "Payments", "payments", d))
}

// event is one line of a payment's timeline.
type event struct {
	At     time.Time
	Kind   string // created, call, dead letter, completed, updated
	Detail string
	Class  string
}

type storyView struct {
	ops.Story
	Events      []event
	RequestBody string
}

func (s *Server) paymentPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	stories, err := s.backend.ShowPayment(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	views := make([]storyView, 0, len(stories))
	for _, st := range stories {
		v := storyView{Story: st, Events: timeline(st)}
		if st.Request != nil {
			v.RequestBody = prettyJSON(st.Request.Body)
		}
		views = append(views, v)
	}
	s.render(w, http.StatusOK, "payment.html", s.newPage(r, "Payment "+id, "payments", views))
}

// timeline orders what a story tells by time: the row's creation, every
// gateway call, every dead letter, and its completion.
func timeline(st ops.Story) []event {
	ev := []event{{At: st.CreatedAt, Kind: "created", Detail: fmt.Sprintf("row claimed for key %s", st.IdempotencyKey), Class: "info"}}
	for _, a := range st.Attempts {
		d := fmt.Sprintf("%s by %s (lease %d): %s", a.Kind, a.WorkerID, a.Attempt, a.Class)
		if a.HTTPStatus != nil {
			d += fmt.Sprintf(", HTTP %d", *a.HTTPStatus)
		}
		if a.Result != "" {
			d += ", " + a.Result
		}
		if a.ErrorCode != "" {
			d += ", error " + a.ErrorCode
		}
		if a.ChargeID != "" {
			d += ", charge " + a.ChargeID
		}
		d += fmt.Sprintf(" in %.1f ms", a.DurationMS)
		ev = append(ev, event{At: a.StartedAt, Kind: "gateway call", Detail: d, Class: a.Class})
	}
	for _, dl := range st.DeadLetters {
		ev = append(ev, event{At: dl.Time, Kind: "dead letter", Detail: fmt.Sprintf("#%d %s: %s", dl.StreamSeq, dl.Reason, dl.Error), Class: "failed"})
	}
	if st.SweptAt != nil {
		ev = append(ev, event{At: *st.SweptAt, Kind: "swept", Detail: "the sweeper re-published the stored request", Class: "info"})
	}
	if st.CompletedAt != nil {
		d := "final: " + st.Status
		if st.ErrorCode != "" {
			d += " (" + st.ErrorCode + ")"
		}
		if st.GatewayChargeID != "" {
			d += ", charge " + st.GatewayChargeID
		}
		ev = append(ev, event{At: *st.CompletedAt, Kind: "outcome", Detail: d, Class: st.Status})
	} else {
		ev = append(ev, event{At: st.UpdatedAt, Kind: "now " + st.Status, Detail: "last update of the row", Class: st.Status})
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At.Before(ev[j].At) })
	for i := range ev {
		ev[i].Detail = mask(ev[i].Detail)
	}
	return ev
}

// dlqForm is the dead-letter filter as submitted, on the list page and in
// a replay preview.
type dlqForm struct {
	Reasons                           []string
	Merchant, Payment, Error, Subject string
	Since, Until                      string
}

func readDLQForm(v url.Values) dlqForm {
	return dlqForm{Reasons: v["reason"], Merchant: strings.TrimSpace(v.Get("merchant")), Payment: strings.TrimSpace(v.Get("payment")),
		Error: strings.TrimSpace(v.Get("error")), Subject: strings.TrimSpace(v.Get("subject")), Since: v.Get("since"), Until: v.Get("until")}
}

// filter checks the form and returns its filter.
func (f dlqForm) filter() (ops.DeadLetterFilter, error) {
	for _, r := range f.Reasons {
		if !slices.Contains(reasonNames(), r) {
			return ops.DeadLetterFilter{}, fmt.Errorf("reason %q: must be one of %s", r, strings.Join(reasonNames(), ", "))
		}
	}
	since, err := parseTime(f.Since)
	if err != nil {
		return ops.DeadLetterFilter{}, fmt.Errorf("since: %w", err)
	}
	until, err := parseTime(f.Until)
	if err != nil {
		return ops.DeadLetterFilter{}, fmt.Errorf("until: %w", err)
	}
	out := ops.DeadLetterFilter{Reasons: f.Reasons, Since: since, Until: until, MerchantID: f.Merchant,
		ErrorContains: f.Error, OriginalSubject: f.Subject}
	if f.Payment != "" {
		out.PaymentID, out.Key = f.Payment, f.Payment
	}
	return out, nil
}

func (f dlqForm) Has(reason string) bool { return slices.Contains(f.Reasons, reason) }

type dlqData struct {
	Form    dlqForm
	Reasons []string
	List    ops.DeadLetterList
	Limit   int
	Problem string
	Rate    float64
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	form := readDLQForm(r.URL.Query())
	d := dlqData{Form: form, Reasons: reasonNames(), Limit: s.cfg.DeadLetterLimit, Rate: s.cfg.ReplayRate}
	f, err := form.filter()
	if err != nil {
		d.Problem = err.Error()
		s.render(w, http.StatusBadRequest, "dlq.html", s.newPage(r, "Dead letters", "dlq", d))
		return
	}
	f.Limit = s.cfg.DeadLetterLimit
	if d.List, err = s.backend.DeadLetterList(r.Context(), f); err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, http.StatusOK, "dlq.html", s.newPage(r, "Dead letters", "dlq", d))
}

type dlqShowData struct {
	ops.DeadLetter
	Headers []header
	Body    string
	Rate    float64
}

type header struct{ Name, Value string }

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		s.refuse(w, r, http.StatusNotFound, "Not a dead-letter sequence.")
		return
	}
	dl, h, err := s.backend.DeadLetter(r.Context(), seq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := dlqShowData{DeadLetter: dl, Body: prettyJSON([]byte(dl.Body)), Rate: s.cfg.ReplayRate}
	for k, vs := range h {
		for _, v := range vs {
			d.Headers = append(d.Headers, header{k, mask(v)})
		}
	}
	sort.Slice(d.Headers, func(i, j int) bool { return d.Headers[i].Name < d.Headers[j].Name })
	s.render(w, http.StatusOK, "dlq_show.html", s.newPage(r, fmt.Sprintf("Dead letter %d", seq), "dlq", d))
}

type auditData struct {
	Actor, Action string
	Page          ops.AuditPage
	NextURL       string
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := auditData{Actor: strings.TrimSpace(q.Get("actor")), Action: strings.TrimSpace(q.Get("action"))}
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	var err error
	if d.Page, err = s.backend.Audit(r.Context(), ops.AuditQuery{Actor: d.Actor, Action: d.Action, Before: before}); err != nil {
		s.fail(w, r, err)
		return
	}
	if d.Page.Next > 0 {
		nq := url.Values{"actor": {d.Actor}, "action": {d.Action}, "before": {strconv.FormatInt(d.Page.Next, 10)}}
		d.NextURL = "/audit?" + nq.Encode()
	}
	s.render(w, http.StatusOK, "audit.html", s.newPage(r, "Audit", "audit", d))
}

// reasonNames are the dead-letter reasons, in the contract's order.
func reasonNames() []string {
	var out []string
	for _, r := range payment.DeadLetterReasons() {
		out = append(out, string(r))
	}
	return out
}
